"""The README stays a front page and the docs hold together: every page in the site's nav, every
relative link and anchor resolving, every shown command checked or skipped with a reason. Fast: files
only, nothing runs (``make docs-check`` composes and runs the commands; ``make docs`` builds the site)."""

from __future__ import annotations

import importlib.util
import re
import sys
import unicodedata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 300


def _checker():
    """tests/docs/check_commands.py, loaded by path (``docs`` would also name the repository's docs/ folder)."""
    if "docs_check_commands" not in sys.modules:
        spec = importlib.util.spec_from_file_location("docs_check_commands", Path(__file__).with_name("check_commands.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
        spec.loader.exec_module(module)
    return sys.modules["docs_check_commands"]


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _outside_code(text: str) -> str:
    """The text without fenced blocks and inline code, where links and headings are not links and headings."""
    text = re.sub(r"^(```+|~~~+).*?^\1\s*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """Python-Markdown's toc slug (what mkdocs gives a heading's anchor; GitHub's agrees on these pages)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^(```+|~~~+).*?^\1\s*$", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(match) for match in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)}


def _nav_files(nav) -> list[str]:
    files = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        files.extend(_nav_files(value) if isinstance(value, list) else [value])
    return files


def test_readme_is_a_front_page_of_at_most_300_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move sections to docs/ (at most {README_MAX_LINES})"


def test_readme_keeps_make_test_as_its_test_command():
    # CI (.ci/run) runs "the README's test command": it must stay `make test`, in a bash block
    commands = [c for block in _checker().read_blocks(ROOT / "README.md") for c in block.commands]
    assert "make test" in commands


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_files(config["nav"])
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(set(pages) - set(nav)) == [], "pages missing from mkdocs.yml nav"
    assert sorted(set(nav) - set(pages)) == [], "nav entries without a page in docs/"
    assert len(nav) == len(set(nav)), "a page listed twice in the nav"


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in _pages():
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _outside_code(page.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading with that anchor)")
    assert broken == []


def test_docs_pages_do_not_link_outside_docs():
    # mkdocs --strict refuses links out of docs/, and the site would not have those files anyway
    outside = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)\s#]+)", _outside_code(page.read_text(encoding="utf-8"))):
            if not re.match(r"^[a-z]+:", target) and not (page.parent / target).resolve().is_relative_to(ROOT / "docs"):
                outside.append(f"{page.name}: {target}")
    assert outside == []


def test_every_shown_command_is_composed_run_or_skipped_with_a_reason():
    checker = _checker()
    blocks = [block for page in _pages() for block in checker.read_blocks(page)]
    assert checker.problems_in_markup(blocks) == []
    assert any(block.mode == "run" for block in blocks), "docs-check would run nothing"


def test_markup_problems_are_found():
    """The checker itself: an unmarked non-composable command, a reasonless skip and a hidden command are errors."""
    checker = _checker()
    page = ROOT / "docs" / "x.md"
    unmarked = checker.Block(page, 1, "bash", "make bench", commands=["make bench"])
    reasonless = checker.Block(page, 5, "bash", "make bench", mode="skip", commands=["make bench"])
    hidden = checker.Block(page, 9, "", "prefixlab-train -m seed=1,2")
    composed = checker.Block(page, 13, "bash", "prefixlab-train seed=1", commands=["prefixlab-train seed=1"])
    problems = checker.problems_in_markup([unmarked, reasonless, hidden, composed])
    assert [p.split(":", 2)[1] for p in problems] == ["1", "5", "9"]


def test_command_lines_join_continuations_and_drop_comments():
    checker = _checker()
    text = "# a comment\nprefixlab-train a=1 \\\n    b=2   # the rest\n\nmake report DIR=x\nls runs\n"
    assert checker.command_lines(text) == ["prefixlab-train a=1 b=2", "make report DIR=x", "ls runs"]
    assert [line for line in checker.command_lines(text) if checker.is_command(line)] == [
        "prefixlab-train a=1 b=2", "make report DIR=x"]
    # lists and pipelines are several commands; redirections and their files are no arguments
    shell = "prefixlab-train -m a=1,2 sweep.fail_on_error=true && echo ok\nprefixlab-train --help > help.txt 2>&1 | head -3"
    assert checker.command_lines(shell) == ["prefixlab-train -m a=1,2 sweep.fail_on_error=true", "echo ok",
                                            "prefixlab-train --help", "head -3"]
    assert not checker.is_composed("prefixlab-train --config-dir myexp experiment=foo")
    assert checker.is_composed("prefixlab-eval task=e2e")


def test_a_sweep_is_composed_value_by_value():
    checker = _checker()
    name, multirun, overrides = checker._overrides_of("prefixlab-train -m method=prefix,prefix_flat seed=1,2,3 eval.source=<run>/p")
    assert (name, multirun) == ("train", True)
    assert overrides[-1] == "eval.source=run/p"
    combos = checker._expansions(overrides)
    assert combos[0] == ["method=prefix", "seed=1", "eval.source=run/p"]
    assert {c[0] for c in combos} == {"method=prefix", "method=prefix_flat"}
    assert {c[1] for c in combos} == {"seed=1", "seed=2", "seed=3"}
    assert len(combos) == 1 + 1 + 2


def test_every_file_named_in_the_architecture_page_exists():
    named = re.findall(r"`((?:src|tests|bench|conf)/[\w/.-]+\.(?:py|yaml))`", (ROOT / "docs" / "architecture.md").read_text())
    assert named, "the architecture page names no files"
    assert [name for name in named if not (ROOT / name).is_file()] == []
