"""docs-check: every command the README and docs/ show is checked, or skipped with a stated reason.

    python tests/docs/check_commands.py            # compose every command, run the blocks marked run
    python tests/docs/check_commands.py --list     # what would be checked, run and skipped; runs nothing

The commands are the lines of fenced ```bash blocks in README.md and docs/*.md (a trailing ``\\``
continues a line; ``# ...`` comments are dropped). Three kinds of check:

* composed: every ``prefixlab-train`` / ``prefixlab-eval`` line, in every block (but those with
  ``--config-dir``, whose folder the block itself usually writes: they need run or skip), is composed in this
  process as the CLI would (Hydra's compose API on conf/, ``-m`` sweeps expanded value by value,
  placeholders such as ``<run>`` read as plain words), typed by the schema and range-checked by
  ``config.validate``. Cheap (no model loads), and it catches a renamed key, group or option.
* run: a block preceded by ``<!-- docs-check: run -->`` runs for real, as one bash script
  (``set -euo pipefail``) with the venv's console scripts first on PATH and ``HF_HUB_OFFLINE=1``;
  ``<!-- docs-check: run, timeout=300 -->`` sets its limit in seconds (default 240). It must exit 0.
  Such blocks show small runs (``model=tiny_random``). They all run in one temporary folder, the
  README's first, then docs/ page by page in name order, so a page may use what the README's quick
  start wrote (``runs/tiny``) instead of training again.
* skipped: ``<!-- docs-check: skip: <reason> -->`` before a block: its other commands (``make``,
  ``prefixlab-generate``, ``prefixlab-report``, ...) are listed with the reason and not run (its
  ``prefixlab-train`` / ``prefixlab-eval`` lines are still composed).

Any other command line in an unmarked block is an error: mark its block run or skip: <reason>.
Commands may not hide in blocks without a language (the check fails on a ``prefixlab-`` or ``make``
line there; give such a block ``bash``, or ``text`` when it shows output).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
COMPOSED = {"prefixlab-train": "train", "prefixlab-eval": "eval"}
MARKER = re.compile(r"<!--\s*docs-check:\s*(run|skip)\s*(?:,\s*timeout=(\d+)\s*)?(?::\s*(.*?))?\s*-->")
DEFAULT_TIMEOUT_S = 240
SHELL_OPERATORS = {"&&", "||", "|", ";", "&"}
REDIRECTION = re.compile(r"^\d*[<>]")  # > file, >file, 2>&1, < file, <<'EOF'


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    mode: str | None = None  # "run", "skip" or None
    reason: str = ""
    timeout_s: int = DEFAULT_TIMEOUT_S
    commands: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def doc_pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def command_lines(text: str) -> list[str]:
    """The shell lines of a block: continuations joined, comments and blank lines dropped."""
    joined, pending = [], ""
    for raw in text.split("\n"):
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True) if line.strip() else []
        # a pipeline or a list (`a && b`, `a | b`, `a; b`) is several commands; redirections are not arguments
        command: list[str] = []
        target_next = False
        for word in [*words, ";"]:
            if target_next:  # the file of a `> file` redirection
                target_next = False
            elif word in SHELL_OPERATORS:
                if command:
                    joined.append(shlex.join(command))
                command = []
            elif REDIRECTION.match(word):
                target_next = bool(re.fullmatch(r"\d*(>>?|<<?)", word))
            else:
                command.append(word)
    return joined


def is_composed(command: str) -> bool:
    """A prefixlab-train / prefixlab-eval line composed in-process; one with --config-dir is run, not composed
    (its folder is usually written by the same block)."""
    words = command.split()
    return words[0] in COMPOSED and not any(w in ("--config-dir", "-cd") or w.startswith("--config-dir=") for w in words)


def is_command(line: str) -> bool:
    first = line.split(maxsplit=1)[0]
    return first.startswith("prefixlab-") or first == "make"


def read_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks, index = [], 0
    while index < len(lines):
        fence = re.match(r"^(\s*)(```+|~~~+)\s*([\w-]*)", lines[index])
        if not fence:
            index += 1
            continue
        opening, language = fence.group(2), fence.group(3).lower()
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(opening):
            end += 1
        block = Block(page, index + 1, language, "\n".join(lines[index + 1:end]))
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = MARKER.search(previous)
        if marker:
            block.mode, block.reason = marker.group(1), (marker.group(3) or "").strip()
            block.timeout_s = int(marker.group(2) or DEFAULT_TIMEOUT_S)
        if language in SHELL_LANGUAGES:
            block.commands = [c for c in command_lines(block.text) if is_command(c)]
        blocks.append(block)
        index = end + 1
    return blocks


def problems_in_markup(blocks: list[Block]) -> list[str]:
    """What is wrong before anything runs: unmarked commands, skips without a reason, hidden commands."""
    problems = []
    for block in blocks:
        if block.language not in SHELL_LANGUAGES:
            hidden = [line for line in block.text.split("\n") if line.strip() and is_command(line.strip())]
            if not block.language and hidden:
                problems.append(f"{block.where}: a block without a language holds commands ({hidden[0].strip()!r}): "
                                "give it bash (checked) or text (output)")
            continue
        if block.mode == "skip" and not block.reason:
            problems.append(f"{block.where}: a skip marker needs a reason: <!-- docs-check: skip: <why> -->")
        if block.mode is None:
            for command in block.commands:
                if not is_composed(command):
                    problems.append(f"{block.where}: {command!r} is neither composed nor run: mark the block "
                                    "<!-- docs-check: run --> or <!-- docs-check: skip: <why> -->")
    return problems


def _overrides_of(command: str) -> tuple[str, bool, list[str]]:
    """(config name, multirun, overrides) of a prefixlab-train / prefixlab-eval command line."""
    words = shlex.split(command)
    config_name, overrides, multirun, skip_next = COMPOSED[words[0]], [], False, False
    for word in words[1:]:
        if skip_next:
            skip_next = False
        elif word in ("-m", "--multirun"):
            multirun = True
        elif word in ("--cfg", "-c", "--package", "-p"):
            skip_next = True
        elif word in ("--help", "-h", "--hydra-help", "--info", "-i"):
            continue
        elif word.startswith("-"):
            raise ValueError(f"{word}: a flag the docs-check does not know; add it to tests/docs/check_commands.py")
        else:
            overrides.append(re.sub(r"<([^<>=]+)>", lambda m: re.sub(r"\W+", "_", m.group(1)), word))  # <run> -> run
    return config_name, multirun, overrides


def _expansions(overrides: list[str]) -> list[list[str]]:
    """Each sweep value at least once: the first value of every sweep, then one sweep at a time through its values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    values = []
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override():
            key = text.split("=", 1)[0]
            values.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            values.append([text])
    first = [choices[0] for choices in values]
    combos = [first]
    for position, choices in enumerate(values):
        for choice in choices[1:]:
            combos.append(first[:position] + [choice] + first[position + 1:])
    return combos


def compose_command(command: str) -> int:
    """Compose (and validate) every expansion of a command; returns how many configs were composed."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    import prefixlab.cli.train as train_cli  # registers the schemas and the ${pid:} resolver
    from prefixlab.config import validate

    config_name, _, overrides = _overrides_of(command)
    combos = _expansions(overrides)
    for combo in combos:
        with initialize_config_dir(config_dir=train_cli.CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=combo, return_hydra_config=True)
        with open_dict(cfg):
            del cfg["hydra"]  # Hydra's own node is composed and checked by its plugins' schemas, not ours
        validate(OmegaConf.to_object(cfg))
    return len(combos)


def run_block(block: Block, folder: Path) -> tuple[int, float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.time()
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=block.timeout_s)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        code, output = 124, f"timed out after {block.timeout_s} s\n{expired.stdout or ''}{expired.stderr or ''}"
    return code, time.time() - started, output if isinstance(output, str) else output.decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="docs-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the checks and the skipped commands; run nothing")
    parser.add_argument("--no-run", action="store_true", help="compose only: do not run the blocks marked run")
    parser.add_argument("pages", nargs="*", type=Path, help="pages to check (default: README.md and docs/*.md)")
    args = parser.parse_args(argv)
    pages = [page.resolve() for page in args.pages] or doc_pages()
    if ROOT / "README.md" not in pages:  # its quick start writes runs/tiny, which pages use
        pages.insert(0, ROOT / "README.md")
    blocks = [block for page in pages for block in read_blocks(page)]
    failures = problems_in_markup(blocks)
    started = time.time()
    composed = configs = 0
    for block in blocks:
        for command in block.commands:
            if is_composed(command):
                if args.list:
                    print(f"compose  {block.where}: {command}")
                    continue
                try:
                    configs += compose_command(command)
                    composed += 1
                except Exception as error:  # noqa: BLE001 - every failure is reported, the check goes on
                    failures.append(f"{block.where}: {command!r} does not compose: {type(error).__name__}: "
                                    f"{str(error).splitlines()[0] if str(error) else ''}")
    if not args.list:
        print(f"composed {composed} prefixlab-train / prefixlab-eval commands ({configs} configs) "
              f"in {time.time() - started:.1f} s")
    for block in blocks:
        if block.mode == "skip":
            for command in block.commands:
                if not is_composed(command) or args.list:
                    print(f"skipped  {block.where}: {command}  ({block.reason})")
    with tempfile.TemporaryDirectory(prefix="docs-check-") as scratch:
        for block in blocks:
            if block.mode != "run":
                continue
            if args.list or args.no_run:
                print(f"run      {block.where}: {len(block.commands)} commands, timeout {block.timeout_s} s")
                continue
            code, seconds, output = run_block(block, Path(scratch))
            print(f"ran      {block.where}: exit {code} in {seconds:.0f} s ({len(block.commands)} commands)")
            if code != 0:
                failures.append(f"{block.where}: the block exited {code}; its output ends:\n"
                                + "\n".join(output.strip().splitlines()[-15:]))
    for failure in failures:
        print(f"docs-check: error: {failure}", file=sys.stderr)
    print(f"docs-check: {'FAILED' if failures else 'ok'} in {time.time() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
