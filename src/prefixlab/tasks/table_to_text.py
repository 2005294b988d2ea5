"""Table-to-text, the paper's main setting: E2E (restaurant meaning representations), WebNLG
(DBpedia triples, seen / unseen categories) and DART (open-domain RDF triples), all multi-reference.
Scored with BLEU, NIST, METEOR, ROUGE-L and CIDEr (``scoring.table_to_text``).

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
  with ``split_seed``, so no input's references cross splits: 80/10/10, or the train / validation /
  test shares of ``split_fractions`` (e.g. [0.45, 0.10, 0.45] for a test split of 246 of the E2E dev
  set's 547 MRs: enough test inputs to resolve effects of 1-3 BLEU).
  ``data_dir`` null: the full official splits from the Hugging Face hub (``GEM/e2e_nlg``,
  ``GEM/dart``; needs the hub or its cache). WebNLG: see ``WebNLG``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Optional

from prefixlab.tasks.scoring import MetricUnavailableError, check_coco_metrics, table_to_text
from prefixlab.tasks.base import SPLITS, Check, DataDirOptions, DataError, Example, TaskOptions
from prefixlab.tasks.hub import load_from_hub, load_local
from prefixlab.tasks.splits import DEFAULT_FRACTIONS, check_fractions, split_by_key

Group = tuple[str, tuple[str, ...]]  # (linearized input, its references in file order)


def check_metrics(task: str) -> None:
    try:
        check_coco_metrics()
    except MetricUnavailableError as error:
        raise DataError(f"task {task!r} reports METEOR and CIDEr: {error}") from error


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


@dataclass
class TableToTextOptions(DataDirOptions):
    """``task.*`` of e2e and dart: the data, and the shares of a by-input split of one file."""

    schema_name = "table_to_text_schema"
    split_fractions: Optional[list[float]] = field(default=None, metadata={"help": (
        "train / validation / test shares of a by-input split when task.data_dir holds one file, e.g. "
        "[0.45, 0.10, 0.45] (null: 0.8 / 0.1 / 0.1); the test split is then the same in every run of that "
        "split_seed. Not for the official splits (three files, or the hub)")})
    hub_name: Optional[str] = field(default=None, metadata={"help": (
        "the Hugging Face dataset read when task.data_dir is null (null: the task's own, GEM/e2e_nlg or GEM/dart). "
        "E2E: GEM/e2e_nlg is the cleaned E2E (33,525 training pairs); tuetschek/e2e_nlg the original release "
        "(42,061) that Li & Liang trained on (scale=paper)")})

    def checks(self) -> list[Check]:
        problem = None if self.split_fractions is None else check_fractions(self.split_fractions)
        return [(problem is None, "split_fractions", self.split_fractions, problem or "")]


class TableToText:
    """Shared by E2E and DART: subclasses name their files, reader and hub dataset."""

    name = ""
    options: ClassVar[type] = TableToTextOptions
    instruction = ""
    answer_cue = "Text:"
    score = staticmethod(table_to_text)
    metric_names = ("bleu", "nist", "meteor", "rougeL", "cider")
    split_files: ClassVar[dict[str, str]] = {}
    hub_name = ""

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, split_fractions: list[float] | None = None,
                 hub_name: str | None = None) -> None:
        self.data_dir = None if data_dir is None else Path(data_dir).expanduser()
        if hub_name:  # else the class's own
            self.hub_name = hub_name
        self.split_seed = split_seed
        if split_fractions is not None:
            problem = check_fractions(split_fractions)
            if problem:
                raise DataError(f"task.split_fractions={list(split_fractions)}: {problem}")
            if self.data_dir is None:
                raise DataError(f"task.split_fractions={list(split_fractions)} splits one local file, but task.data_dir=null "
                                "reads the hub's official splits: set task.split_fractions=null, or task.data_dir to the file")
        self.split_fractions = None if split_fractions is None else tuple(float(v) for v in split_fractions)

    def check_available(self) -> None:
        """Before any model loads: the data can be read and METEOR can run (Java), else one line."""
        check_metrics(self.name)
        self._groups("test")

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
        return _local_groups(self.data_dir, tuple(sorted(self.split_files.items())), type(self), self.split_seed,
                             self.split_fractions)[split]


@lru_cache(maxsize=8)
def _local_groups(data_dir: Path, split_files: tuple, task_type: type, seed: int,
                  fractions: tuple[float, float, float] | None = None) -> dict[str, list[Group]]:
    """Every split's groups from local files (cached: the datamodule and the module both ask).
    ``fractions`` (train, validation, test) apply when one file is split; None: 80/10/10."""
    files = dict(split_files)
    if data_dir.is_file():
        found = {None: data_dir}
    elif data_dir.is_dir():
        found = {split: data_dir / f for split, f in files.items() if (data_dir / f).is_file()}
    else:
        raise DataError(f"task.data_dir={str(data_dir)!r} does not exist")
    if len(found) == 3:
        if fractions is not None:
            raise DataError(f"task.split_fractions={list(fractions)} splits one file, but task.data_dir={str(data_dir)!r} "
                            "holds the official train / validation / test files: set task.split_fractions=null")
        return {split: _group(task_type.read(path), str(path)) for split, path in found.items()}
    if len(found) != 1:
        raise DataError(
            f"task.data_dir={str(data_dir)!r}: expected all of {sorted(files.values())} (official splits) or exactly one "
            f"of them (split by input 80/10/10), found {sorted(p.name for p in found.values()) or 'none'}"
        )
    (path,) = found.values()
    groups = _group(task_type.read(path), str(path))
    _, validation_share, test_share = fractions or DEFAULT_FRACTIONS
    try:
        assignment = split_by_key([s for s, _ in groups], seed, validation_share, test_share)
    except ValueError as error:
        raise DataError(f"{path}: task.split_fractions={list(fractions or DEFAULT_FRACTIONS)}: {error}") from error
    return {split: [g for g in groups if assignment[g[0]] == split] for split in SPLITS}


def _hub_dataset(name: str, split: str):
    """One split by hub name (the GEM repositories ship loading scripts; ``load_from_hub`` then tries
    the hub's Parquet export). A failure is one DataError line naming the dataset and the fixes."""
    return load_from_hub(name, split=split)


def _hub_pairs(rows, source_of) -> list[tuple[str, str]]:
    """GEM rows carry ``target`` (train: one per row) and ``references`` (validation/test); the original
    E2E release (tuetschek/e2e_nlg) one ``human_reference`` per row (rows of an MR are grouped later)."""
    pairs = []
    for row in rows:
        source = source_of(row)
        refs = [r for r in (row.get("references") or []) if r] or [row.get("target") or row.get("human_reference") or ""]
        pairs += [(source, r) for r in refs]
    return pairs


class E2E(TableToText):
    name = "e2e"
    instruction = "Describe this restaurant in one or two sentences, using every attribute."
    split_files: ClassVar = {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"}
    hub_name = "GEM/e2e_nlg"
    read = staticmethod(read_e2e_csv)

    def hub_rows(self, split: str) -> list[tuple[str, str]]:
        return _hub_pairs(_hub_dataset(self.hub_name, split), lambda row: row["meaning_representation"])


class DART(TableToText):
    name = "dart"
    instruction = "Write one or two sentences that state all of these facts (subject | predicate | object)."
    split_files: ClassVar = {
        "train": "dart-v1.1.1-full-train.json",
        "validation": "dart-v1.1.1-full-dev.json",
        "test": "dart-v1.1.1-full-test.json",
    }
    hub_name = "GEM/dart"
    read = staticmethod(read_dart_json)

    def hub_rows(self, split: str) -> list[tuple[str, str]]:
        return _hub_pairs(_hub_dataset(self.hub_name, split), lambda row: linearize_triples(row["tripleset"]))


WEBNLG_CATEGORY_SETS = ("all", "seen", "unseen")


def linearize_webnlg(tripleset) -> str:
    """WebNLG's modified triples (``"John_E_Blaha | birthDate | 1942_08_26"``) as DART's text: DBpedia's
    underscores become spaces (the references write names with spaces), triples joined with `` || ``."""
    triples = []
    for triple in tripleset:
        parts = [p.strip().replace("_", " ") for p in str(triple).split(" | ")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"triple {triple!r} is not 'subject | predicate | object'")
        triples.append(parts)
    return linearize_triples(triples)


@dataclass
class WebNLGOptions(TaskOptions):
    """``task.*`` of webnlg."""

    schema_name = "webnlg_schema"
    data_dir: Optional[str] = field(default=None, metadata={"help": "train/dev/test .jsonl files in the hub's columns (null: the hub)"})
    test_categories: str = field(default="all", metadata={"help": "all | seen | unseen test categories (seen: in the train split)"})

    def checks(self) -> list[Check]:
        return [(self.test_categories in WEBNLG_CATEGORY_SETS, "test_categories", self.test_categories, " | ".join(WEBNLG_CATEGORY_SETS))]


class WebNLG:
    """WebNLG 2017 challenge (DBpedia triples -> text), multi-reference like DART, with its 15
    categories: a category of the test split is *seen* if the train split has it (the 2017 test set
    holds 10 seen and 5 unseen categories), computed from the data. ``test_categories`` picks the
    test examples: ``all``, ``seen`` or ``unseen`` (the paper's S / U / A columns, one per run).

    Data: the hub dataset ``webnlg-challenge/web_nlg`` (config ``webnlg_challenge_2017``; splits
    train / dev / test, columns ``category``, ``modified_triple_sets``, ``lex``), or ``data_dir`` with
    files of those splits and columns (``train.jsonl``, ``dev.jsonl``, ``test.jsonl``: what
    ``Dataset.to_json`` writes) or a ``save_to_disk`` folder."""

    name = "webnlg"
    options = WebNLGOptions
    instruction = DART.instruction
    answer_cue = "Text:"
    score = staticmethod(table_to_text)
    metric_names = ("bleu", "nist", "meteor", "rougeL", "cider")
    hub_name = "webnlg-challenge/web_nlg"
    hub_config = "webnlg_challenge_2017"
    hub_splits: ClassVar = {"train": "train", "validation": "dev", "test": "test"}

    def __init__(self, data_dir: str | None = None, test_categories: str = "all") -> None:
        if test_categories not in WEBNLG_CATEGORY_SETS:
            raise DataError(f"task.test_categories={test_categories!r}: expected one of {', '.join(WEBNLG_CATEGORY_SETS)}")
        self.data_dir = None if data_dir is None else Path(data_dir).expanduser()
        self.test_categories = test_categories
        self._entries: dict[str, list[tuple[str | None, str, str]]] = {}
        self._loaded = None
        self._origins: dict[str, str] = {}

    def check_available(self) -> None:
        check_metrics(self.name)
        self.load_split("test")

    def _where(self, hub_split: str) -> str:
        return self._origins.get(hub_split) or f"{self.data_dir if self.data_dir else self.hub_name} ({hub_split} split)"

    def _rows(self, split: str) -> list[tuple[str | None, str, str]]:
        """(category, linearized triples, reference) per reference of one split."""
        if split in self._entries:
            return self._entries[split]
        if self._loaded is None:
            if self.data_dir:
                self._loaded, self._origins = load_local(self.data_dir, self.name)
            else:
                self._loaded = dict(load_from_hub(self.hub_name, self.hub_config, columns=("category", "modified_triple_sets", "lex")))
        hub_split = self.hub_splits[split]
        if hub_split not in self._loaded:
            raise DataError(f"{self._where(hub_split)}: missing; task 'webnlg' needs the splits {sorted(self.hub_splits.values())}, found {sorted(self._loaded)}")
        dataset = self._loaded[hub_split]
        for column in ("modified_triple_sets", "lex"):
            if column not in dataset.column_names:
                raise DataError(f"{self._where(hub_split)}: no column {column!r}; it has {list(dataset.column_names)}")
        has_category = "category" in dataset.column_names
        rows = []
        for i, entry in enumerate(dataset):
            try:
                source = linearize_webnlg(entry["modified_triple_sets"]["mtriple_set"][0])
                texts = entry["lex"]["text"]
            except (KeyError, IndexError, TypeError, ValueError) as error:
                raise DataError(
                    f"{self._where(hub_split)}: row {i}: expected modified_triple_sets.mtriple_set[0] as "
                    f"'subject | predicate | object' strings and lex.text ({error})"
                ) from error
            rows += [(entry["category"] if has_category else None, source, t or "") for t in texts]
        self._entries[split] = rows
        return rows

    def load_split(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        rows = self._rows(split)
        groups = _group([(source, ref) for _, source, ref in rows], self._where(self.hub_splits[split]))
        if split == "test" and self.test_categories != "all":
            if any(category is None for category, _, _ in rows):
                raise DataError(f"{self._where('test')}: no 'category' column, so task.test_categories={self.test_categories!r} "
                                "cannot tell seen from unseen; use task.test_categories=all")
            seen = {category for category, _, _ in self._rows("train")}
            category_of = {" ".join(source.split()): category for category, source, _ in rows}
            keep = (lambda c: c in seen) if self.test_categories == "seen" else (lambda c: c not in seen)
            groups = [g for g in groups if keep(category_of[g[0]])]
            if not groups:
                raise DataError(f"{self._where('test')}: no test input of a {self.test_categories} category "
                                f"(train categories: {', '.join(sorted(seen))})")
        return _examples(groups, split, self.name)

    def categories(self, split: str) -> dict[str, str | None]:
        """Linearized input -> its category, for reports per category."""
        return {" ".join(source.split()): category for category, source, _ in self._rows(split)}
