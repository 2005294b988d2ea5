"""prefixlab-score: the official E2E NLG Challenge metrics for any system's output.

    prefixlab-score REFS SYS [SYS ...]          # BLEU, NIST, METEOR, ROUGE_L, CIDEr per SYS
    prefixlab-score --json REFS SYS
    prefixlab-score RUN/predictions.jsonl [...]   # a prefixlab run's outputs with their references

The files are the E2E script's (``measure_scores.py``): REFS holds one reference a line with a
blank line between instances (a file without blank lines: one reference per instance), or a
.csv/.tsv with the MR in the first column and a reference in the second (consecutive rows with the
same MR are one instance); SYS holds one output a line. The figures are printed in the script's
format and scales (BLEU, METEOR and ROUGE_L as fractions; NIST and CIDEr as they are), and they
are the script's own to the 4 decimals it prints (``prefixlab.tasks.scoring``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path


class ScoreInputError(ValueError):
    """A REFS or SYS file that cannot be scored: the message names the file and the line."""


def _text_lines(path: Path) -> list[str]:
    """The file's lines, decoded as UTF-8, or one error naming the file and the line."""
    from prefixlab.sweeps.significance import SignificanceError, read_utf8

    try:
        text = read_utf8(path)  # a BOM is not part of the first line
    except SignificanceError as error:
        raise ScoreInputError(str(error)) from None
    if not text.strip():
        raise ScoreInputError(f"{path}: the file is empty")
    # Only \n ends a line: an output holding U+2028 or U+0085 stays one output (the script's codecs
    # reader would break it in two and misalign every later output).
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_references(path: Path) -> list[tuple[tuple[str, ...], int]]:
    """[(references of one instance, the line its first reference is on)], as the script groups them."""
    if path.suffix.lower() in (".csv", ".tsv"):
        return _read_reference_table(path)
    instances: list[tuple[list[str], int]] = [([], 1)]
    for number, line in enumerate(_text_lines(path), start=1):
        line = line.strip()
        if line:
            if not instances[-1][0]:
                instances[-1] = ([], number)
            instances[-1][0].append(line)
        elif instances[-1][0]:
            instances.append(([], number + 1))
        elif number > 1:  # two blank lines in a row: the script would make an instance with no reference
            raise ScoreInputError(f"{path} line {number}: a second blank line in a row, i.e. an instance with no "
                                  f"reference; separate instances with exactly one blank line")
    if not instances[-1][0]:
        instances.pop()
    if len(instances) == 1:  # no blank line at all: a single-reference file (the script does the same)
        refs, first = instances[0]
        return [((ref,), first + i) for i, ref in enumerate(refs)]
    return [(tuple(refs), first) for refs, first in instances]


def _read_reference_table(path: Path) -> list[tuple[tuple[str, ...], int]]:
    """MR and reference columns; consecutive rows with the same MR form one instance; a header row
    starting with ``mr`` is skipped."""
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    csv.field_size_limit(sys.maxsize)
    rows = list(csv.reader(io.StringIO("\n".join(_text_lines(path)) + "\n"), dialect))
    instances: list[tuple[list[str], int]] = []
    previous_mr = None
    for number, row in enumerate(rows, start=1):
        if number == 1 and row and re.match(r"^\"?mr", row[0], re.I):
            continue
        if not row:
            continue
        if len(row) != 2:
            raise ScoreInputError(f"{path} line {number}: {len(row)} columns; expected 2 (MR, reference)")
        mr, ref = row[0].strip(), row[1].strip()
        if mr != previous_mr:
            instances.append(([], number))
            previous_mr = mr
        instances[-1][0].append(ref)
    if not instances:
        raise ScoreInputError(f"{path}: no reference rows")
    return [(tuple(refs), first) for refs, first in instances]


def read_outputs(path: Path) -> list[str]:
    return [line.strip() for line in _text_lines(path)]


def read_predictions(path: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    """A prefixlab ``predictions.jsonl``, a live run's or an archived one's (whose references are kept
    once in its experiment's ``runs/references.jsonl``): each row's ``prediction`` and ``references``."""
    from prefixlab.sweeps.significance import SignificanceError, read_predictions as read_run

    try:  # unreadable, not UTF-8, empty or a bad row: one error naming the file (and the line)
        run = read_run(path)
    except SignificanceError as error:
        raise ScoreInputError(str(error)) from None
    return list(run.predictions), list(run.references)


def check_counts(refs_path: Path, references: list[tuple[tuple[str, ...], int]], sys_path: Path, outputs: list[str]) -> None:
    if len(outputs) < len(references):
        missing_at = references[len(outputs)][1]
        raise ScoreInputError(f"{sys_path}: {len(outputs)} outputs but {len(references)} reference instances in "
                              f"{refs_path}; the first instance without an output starts on {refs_path} line {missing_at}")
    if len(outputs) > len(references):
        raise ScoreInputError(f"{sys_path} line {len(references) + 1}: an output beyond the last of the "
                              f"{len(references)} reference instances in {refs_path} ({len(outputs)} outputs)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="prefixlab-score",
        description="Score system outputs with the official E2E NLG Challenge metrics "
                    "(BLEU, NIST, METEOR, ROUGE_L, CIDEr), as its measure_scores.py prints them.")
    parser.add_argument("refs", type=Path, help="references: one a line, a blank line between instances "
                                                "(or a .csv/.tsv of MR, reference rows); or a prefixlab predictions.jsonl")
    parser.add_argument("sys", type=Path, nargs="*", help="system output file(s): one output a line "
                                                          "(none when the first file is a predictions.jsonl)")
    parser.add_argument("--json", action="store_true", help="print JSON (one object; one line per file for several)")
    args = parser.parse_args(argv)

    from prefixlab.tasks.scoring import E2E_SCRIPT_METRICS, MetricUnavailableError, e2e_script

    try:
        systems = []  # (file, outputs, references): every file is checked before any metric runs
        if args.refs.suffix == ".jsonl":
            for path in [args.refs, *args.sys]:
                systems.append((path, *read_predictions(path)))
        else:
            if not args.sys:
                parser.error("give the system output file(s) after REFS")
            references = read_references(args.refs)
            for path in args.sys:
                outputs = read_outputs(path)
                check_counts(args.refs, references, path, outputs)
                systems.append((path, outputs, [group for group, _ in references]))
        for path, outputs, refs in systems:
            scores = e2e_script(outputs, refs)
            if args.json:
                print(json.dumps(scores if len(systems) == 1 else {"file": str(path), **scores}))
                continue
            if len(systems) > 1:
                print(f"{path}")
            print("SCORES:\n==============")
            for name in E2E_SCRIPT_METRICS:
                print(f"{name}: {scores[name]:.4f}")
            print()
    except (ScoreInputError, MetricUnavailableError) as error:
        sys.exit(f"prefixlab-score: error: {error}")


if __name__ == "__main__":
    main()
