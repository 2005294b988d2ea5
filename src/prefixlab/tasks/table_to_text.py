"""Table-to-text, the paper's main setting: E2E (restaurant meaning representations) and DART
(open-domain RDF triples), both multi-reference.

Rows are grouped by input: the train split yields one example per (input, reference) pair,
validation and test one example per input with all its references, so a prediction is
scored once against every reference (corpus BLEU as in the E2E and DART evaluations).

Linearization (the model sees text):
  E2E   the MR as released: ``name[The Eagle], eatType[coffee shop], food[French]``
  DART  ``subject | predicate | object`` per triple, triples joined with `` || ``
        (the original PrefixTuning code writes ``s : p : o`` joined by `` | ``; any fixed
        unambiguous separator works, this one keeps ``:`` free for values such as times)

Data:
  ``data_dir`` (task.data_dir) a folder or a file in the released formats. E2E: ``trainset.csv``,
  ``devset.csv``, ``testset_w_refs.csv`` (columns ``mr``, ``ref``); DART:
  ``dart-v1.1.1-full-{train,dev,test}.json``. When all three split files are there they are
  the splits; when only one file is (e.g. the dev set in ../shared/data) it is split BY INPUT
  80/10/10 with ``split_seed``, so no input's references cross splits.
  ``data_dir`` null: the full official splits from the Hugging Face hub (``GEM/e2e_nlg``,
  ``GEM/dart``; needs the hub or its cache).
"""

from __future__ import annotations

import csv
import hashlib
import json
from functools import lru_cache
from pathlib import Path

from ..scoring import table_to_text
from .base import SPLITS, DataError, Example
from .splits import split_by_key

Group = tuple[str, tuple[str, ...]]  # (linearized input, its references in file order)


def _group(pairs, where: str) -> list[Group]:
    """(input, reference) pairs -> inputs in first-seen order, each with its distinct references."""
    groups: dict[str, list[str]] = {}
    for source, reference in pairs:
        source, reference = " ".join(source.split()), " ".join(reference.split())
        if not source:
            raise DataError(f"{where}: a row has an empty input")
        refs = groups.setdefault(source, [])
        if reference and reference not in refs:
            refs.append(reference)
    empty = [s for s, refs in groups.items() if not refs]
    if empty:
        raise DataError(f"{where}: input {empty[0][:80]!r} has no non-empty reference")
    if not groups:
        raise DataError(f"{where}: no rows")
    return [(s, tuple(refs)) for s, refs in groups.items()]


def _examples(groups: list[Group], split: str, prefix: str) -> list[Example]:
    examples = []
    for source, refs in groups:
        key = f"{prefix}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"
        if split == "train":  # every reference is a training target
            examples += [Example(f"{key}#{j}", source, ref, refs) for j, ref in enumerate(refs)]
        else:
            examples.append(Example(key, source, refs[0], refs))
    return examples


def read_e2e_csv(path: Path) -> list[tuple[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"mr", "ref"} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path}: missing column(s) {sorted(missing)}; E2E files have columns mr, ref")
            return [(row["mr"] or "", row["ref"] or "") for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot read E2E csv: {error}") from error


def linearize_triples(tripleset) -> str:
    return " || ".join(" | ".join(str(part).strip() for part in triple) for triple in tripleset)


def read_dart_json(path: Path) -> list[tuple[str, str]]:
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read DART json: {error}") from error
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON list of {{tripleset, annotations}} entries")
    pairs = []
    for i, entry in enumerate(entries):
        try:
            triples = entry["tripleset"]
            if not triples or any(len(t) != 3 for t in triples):
                raise DataError(f"{path}: entry {i}: tripleset must be a non-empty list of [subject, predicate, object]")
            source = linearize_triples(triples)
            pairs += [(source, a["text"] or "") for a in entry["annotations"]]
        except (KeyError, TypeError) as error:
            raise DataError(f"{path}: entry {i}: expected keys tripleset and annotations[].text ({error!r})") from error
    return pairs


class TableToText:
    """Shared by E2E and DART: subclasses name their files, reader and hub dataset."""

    name = ""
    instruction = ""
    answer_cue = "Text:"
    score = staticmethod(table_to_text)
    metric_names = ("bleu", "nist", "rougeL")
    split_files: dict[str, str] = {}
    hub_name = ""

    def __init__(self, data_dir: str | None = None, split_seed: int = 0) -> None:
        self.data_dir = None if data_dir is None else Path(data_dir).expanduser()
        self.split_seed = split_seed

    @staticmethod
    def read(path: Path) -> list[tuple[str, str]]:
        raise NotImplementedError

    def hub_rows(self, split: str) -> list[tuple[str, str]]:
        raise NotImplementedError

    def load_split(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        return _examples(self._groups(split), split, self.name)

    def _groups(self, split: str) -> list[Group]:
        if self.data_dir is None:
            return _group(self.hub_rows(split), f"{self.hub_name} ({split})")
        return _local_groups(self.data_dir, tuple(sorted(self.split_files.items())), type(self), self.split_seed)[split]


@lru_cache(maxsize=8)
def _local_groups(data_dir: Path, split_files: tuple, task_type: type, seed: int) -> dict[str, list[Group]]:
    """Every split's groups from local files (cached: the datamodule and the module both ask)."""
    files = dict(split_files)
    if data_dir.is_file():
        found = {None: data_dir}
    elif data_dir.is_dir():
        found = {split: data_dir / f for split, f in files.items() if (data_dir / f).is_file()}
    else:
        raise DataError(f"task.data_dir={str(data_dir)!r} does not exist")
    if len(found) == 3:
        return {split: _group(task_type.read(path), str(path)) for split, path in found.items()}
    if len(found) != 1:
        raise DataError(
            f"task.data_dir={str(data_dir)!r}: expected all of {sorted(files.values())} (official splits) or exactly one "
            f"of them (split by input 80/10/10), found {sorted(p.name for p in found.values()) or 'none'}"
        )
    (path,) = found.values()
    groups = _group(task_type.read(path), str(path))
    assignment = split_by_key([s for s, _ in groups], seed)
    return {split: [g for g in groups if assignment[g[0]] == split] for split in SPLITS}


def _hub_dataset(name: str, split: str):
    """The GEM repositories ship loading scripts, which datasets >= 4 no longer runs; the hub's
    automatic Parquet export (revision refs/convert/parquet) holds the same rows, so try it next."""
    try:
        import datasets
    except ImportError as error:
        raise DataError(f"loading {name!r} needs the 'datasets' package; or set task.data_dir") from error
    error = None
    for revision in (None, "refs/convert/parquet"):
        try:
            return datasets.load_dataset(name, split=split, **({"revision": revision} if revision else {}))
        except Exception as caught:  # offline, missing, script-based, renamed: try the next, then one clear line
            error = caught
    first_line = str(error).splitlines()[0] if str(error) else ""
    raise DataError(
        f"could not load {name!r} split {split!r} from the Hugging Face hub ({type(error).__name__}: {first_line}); "
        "set task.data_dir to a folder with the released files"
    ) from error


def _hub_pairs(rows, source_of) -> list[tuple[str, str]]:
    """GEM rows carry ``target`` (train: one per row) and ``references`` (validation/test)."""
    pairs = []
    for row in rows:
        source = source_of(row)
        refs = [r for r in (row.get("references") or []) if r] or [row.get("target") or ""]
        pairs += [(source, r) for r in refs]
    return pairs


class E2E(TableToText):
    name = "e2e"
    instruction = "Describe this restaurant in one or two sentences, using every attribute."
    split_files = {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"}
    hub_name = "GEM/e2e_nlg"
    read = staticmethod(read_e2e_csv)

    def hub_rows(self, split: str) -> list[tuple[str, str]]:
        return _hub_pairs(_hub_dataset(self.hub_name, split), lambda row: row["meaning_representation"])


class DART(TableToText):
    name = "dart"
    instruction = "Write one or two sentences that state all of these facts (subject | predicate | object)."
    split_files = {
        "train": "dart-v1.1.1-full-train.json",
        "validation": "dart-v1.1.1-full-dev.json",
        "test": "dart-v1.1.1-full-test.json",
    }
    hub_name = "GEM/dart"
    read = staticmethod(read_dart_json)

    def hub_rows(self, split: str) -> list[tuple[str, str]]:
        return _hub_pairs(_hub_dataset(self.hub_name, split), lambda row: linearize_triples(row["tripleset"]))
