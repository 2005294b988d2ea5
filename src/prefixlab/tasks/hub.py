"""Task data from the Hugging Face hub (``datasets.load_dataset``) or from local files laid out
like the hub dataset, and the task classes built on them: summarization (XSum, CNN/DailyMail)
and classification with label words (SST-2, AG News).

Local data (``task.data_dir``): a folder written by ``DatasetDict.save_to_disk``, or one file
per hub split named after it (``train.jsonl``, ``validation.csv``, ``test.parquet``, ...; JSON
lines, JSON, CSV or Parquet) with the hub's columns. Export once where the hub is reachable:
``load_dataset("EdinburghNLP/xsum")["test"].to_json("xsum/test.jsonl")``.

Hub failures are one DataError line naming the dataset and the fix, raised by
``check_available`` (the datamodule calls it when it is built, before any model loads).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from prefixlab.tasks.scoring import classification, rouge
from prefixlab.tasks.base import SPLITS, DataDirOptions, DataError, Example
from prefixlab.tasks.splits import carve

log = logging.getLogger(__name__)

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else "")[:200]


def hub_error(name: str, config: str | None, error: BaseException, split: str | None = None,
              columns: tuple[str, ...] = ()) -> DataError:
    """One line: what could not be loaded, why (the error's first line) and the fixes."""
    what = f"{name!r}" + (f" (config {config!r})" if config else "") + (f" split {split!r}" if split else "")
    network = ("HF_HUB_OFFLINE=1 is set and it is not in the local datasets cache: run once with network access"
               if hub_offline() else "check the network access to huggingface.co (or set HF_HUB_OFFLINE=1 to use only the cache)")
    return DataError(
        f"could not load {what} from the Hugging Face hub ({type(error).__name__}: {_first_line(error)}); "
        f"{network}, or set task.data_dir to local files with the hub's columns{' (' + ', '.join(columns) + ')' if columns else ''} "
        "(or use task=local with your own files)"
    )


def load_from_hub(name: str, config: str | None = None, split: str | None = None, columns: tuple[str, ...] = ()) -> Any:
    """``datasets.load_dataset`` by hub name: a DatasetDict (``split=None``) or one split.

    Repositories that ship loading scripts (which datasets >= 4 no longer runs) are tried again
    from the hub's automatic Parquet export (revision refs/convert/parquet), which holds the same rows."""
    try:
        import datasets
    except ImportError as error:
        raise DataError(f"loading {name!r} needs the 'datasets' package (pip install datasets); or set task.data_dir") from error
    args = (name, config) if config else (name,)
    kwargs = {"split": split} if split else {}
    error: BaseException | None = None
    for revision in (None, "refs/convert/parquet"):
        try:
            return datasets.load_dataset(*args, **kwargs, **({"revision": revision} if revision else {}))
        except Exception as caught:  # noqa: BLE001 (offline, missing, script-based, renamed: try the next, then one clear line)
            error = caught
    raise hub_error(name, config, error, split, columns) from error


def load_local(data_dir: Path, task: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Hub split name -> ``datasets.Dataset`` from a ``save_to_disk`` folder or one file per split,
    and hub split name -> where it came from (the file, for error messages)."""
    import datasets

    if not data_dir.exists():
        raise DataError(f"task.data_dir={str(data_dir)!r} does not exist")
    if (data_dir / "dataset_dict.json").is_file():
        try:
            loaded = dict(datasets.load_from_disk(str(data_dir)))
            return loaded, {split: f"{data_dir} ({split} split)" for split in loaded}
        except Exception as error:
            raise DataError(f"task.data_dir={str(data_dir)!r}: cannot read the saved dataset ({type(error).__name__}: {_first_line(error)})") from error
    files = [data_dir] if data_dir.is_file() else sorted(p for p in data_dir.iterdir() if p.suffix.lower() in FILE_BUILDERS)
    found: dict[str, Any] = {}
    for path in files:
        if path.suffix.lower() not in FILE_BUILDERS:
            raise DataError(f"{path}: task {task!r} reads .jsonl, .json, .csv or .parquet files")
        if path.stem in found:
            raise DataError(f"task.data_dir={str(data_dir)!r}: two files for the {path.stem!r} split; keep one")
        try:
            found[path.stem] = datasets.load_dataset(FILE_BUILDERS[path.suffix.lower()], data_files=str(path), split="train")
        except Exception as error:
            raise DataError(f"{path} ({path.stem} split): cannot read the file ({type(error).__name__}: {_first_line(error)})") from error
    if not found:
        raise DataError(f"task.data_dir={str(data_dir)!r}: no split files (train.jsonl, validation.jsonl, test.jsonl, or .csv/.json/.parquet)")
    return found, {p.stem: f"{p} ({p.stem} split)" for p in files}


class HubTask:
    """A task whose data is one hub dataset (or local files laid out like it).

    ``split_map`` names the hub split behind each of our splits; ``None`` for validation means
    "carved from train": a ``validation_share`` of the distinct sources, chosen with
    ``split_seed`` (sorted, seeded shuffle), so the same text never sits on both sides."""

    name = ""
    options: ClassVar[type] = DataDirOptions
    hub_name = ""
    hub_config: str | None = None
    source_column = ""
    target_column = ""
    split_map: ClassVar[dict[str, str | None]] = {"train": "train", "validation": "validation", "test": "test"}
    validation_share = 0.05

    def __init__(self, data_dir: str | None = None, split_seed: int = 0) -> None:
        self.data_dir = None if data_dir is None else Path(data_dir).expanduser()
        self.split_seed = split_seed
        self._loaded: dict[str, Any] | None = None
        self._origins: dict[str, str] = {}

    # ---- data ----------------------------------------------------------------------------
    def check_available(self) -> None:
        """Load the data now (hub download or local files): a failure is a DataError before any model loads."""
        self._data()

    def _data(self) -> dict[str, Any]:
        if self._loaded is None:
            if self.data_dir is not None:
                self._loaded, self._origins = load_local(self.data_dir, self.name)
            else:
                self._loaded = dict(load_from_hub(self.hub_name, self.hub_config, columns=(self.source_column, self.target_column)))
            needed = {s for s in self.split_map.values() if s}
            missing = sorted(needed - set(self._loaded))
            if missing:
                where = f"task.data_dir={str(self.data_dir)!r}" if self.data_dir else f"{self.hub_name!r}"
                raise DataError(f"{where}: task {self.name!r} needs the split(s) {missing}; found {sorted(self._loaded)}")
        return self._loaded

    def _where(self, hub_split: str) -> str:
        return self._origins.get(hub_split) or f"{self.data_dir if self.data_dir else self.hub_name} ({hub_split} split)"

    def _columns(self, hub_split: str, columns: tuple[str, ...]) -> list[tuple]:
        dataset = self._data()[hub_split]
        names = list(dataset.column_names)
        for column in columns:
            if column not in names:
                raise DataError(f"{self._where(hub_split)}: no column {column!r}; it has {names}. Task {self.name!r} reads {list(columns)}")
        table = dataset.select_columns(list(columns)).to_dict()
        return list(zip(*(table[c] for c in columns)))

    def _text(self, value, hub_split: str, row: int, column: str) -> str:
        if not isinstance(value, str):
            raise DataError(f"{self._where(hub_split)}: row {row}: column {column!r} is {value!r}, not text")
        return " ".join(value.split())

    def _pairs(self, hub_split: str) -> list[tuple[int, str, str]]:
        """(row, source, target) for the rows of one hub split; rows with an empty source or target are skipped."""
        pairs, skipped = [], 0
        for row, (source, target) in enumerate(self._columns(hub_split, (self.source_column, self.target_column))):
            source = self._text(source, hub_split, row, self.source_column)
            target = self.target_of(target, hub_split, row)
            if source and target:
                pairs.append((row, source, target))
            else:
                skipped += 1
        if skipped:  # XSum has a few empty documents; a whole split of them is an error below
            log.warning("%s: skipped %d row(s) with an empty %s or %s", self._where(hub_split), skipped,
                        self.source_column, self.target_column)
        if not pairs:
            raise DataError(f"{self._where(hub_split)}: no rows with a non-empty {self.source_column!r} and {self.target_column!r}")
        return pairs

    def target_of(self, value, hub_split: str, row: int) -> str:
        return self._text(value, hub_split, row, self.target_column)

    def load_split(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        hub_split = self.split_map[split] or self.split_map["train"]
        pairs = self._pairs(hub_split)
        if split in ("train", "validation") and self.split_map["validation"] is None:
            held_out = carve([source for _, source, _ in pairs], self.split_seed, self.validation_share)
            pairs = [p for p in pairs if (p[1] in held_out) == (split == "validation")]
        return [Example(f"{hub_split}-{row}", source, target, (target,)) for row, source, target in pairs]


class Summarization(HubTask):
    metric_names = ("rouge1", "rouge2", "rougeL", "rougeLsum")

    @staticmethod
    def score(predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
        """ROUGE-1/2/L and the summary-level ROUGE-Lsum that CNN/DailyMail and XSum papers report."""
        return rouge(predictions, references, summary_level=True)
    answer_cue = "Summary:"

    def __init__(self, data_dir: str | None = None) -> None:  # the hub splits are used as they are: no split_seed
        super().__init__(data_dir)


class XSum(Summarization):
    """XSum (BBC articles -> one-sentence summary), the paper's summarization task."""

    name = "xsum"
    hub_name = "EdinburghNLP/xsum"
    source_column, target_column = "document", "summary"
    instruction = "Summarize this BBC news article in one sentence."


class CNNDailyMail(Summarization):
    """CNN/DailyMail 3.0.0 (news article -> highlights); the highlights' line breaks become spaces."""

    name = "cnn_dailymail"
    hub_name = "abisee/cnn_dailymail"
    hub_config = "3.0.0"
    source_column, target_column = "article", "highlights"
    instruction = "Write the highlights of this news article in a few sentences."


class LabelWords(HubTask):
    """Classification as generation: the target is a label word; scored by exact match after
    normalization (accuracy) and macro-F1 over ``labels``. ``labels[i]`` is the word of class id
    ``i``, so an encoder classification head can use the same order."""

    labels: tuple[str, ...] = ()
    metric_names = ("accuracy", "macro_f1")

    def score(self, predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
        return classification(predictions, references, self.labels)

    def target_of(self, value, hub_split: str, row: int) -> str:
        """A class id (0..n-1) or the label word itself (any case); anything else names split and row."""
        if isinstance(value, bool):
            value = None  # True/False are ints in Python, never label ids here
        if isinstance(value, int) and 0 <= value < len(self.labels):
            return self.labels[value]
        if isinstance(value, str):
            by_word = {label.lower(): label for label in self.labels}
            if value.strip().lower() in by_word:
                return by_word[value.strip().lower()]
            if value.strip().lstrip("-").isdigit():
                return self.target_of(int(value), hub_split, row)
        note = " (SST-2's hub test split is unlabelled (-1); this task tests on its validation split)" if value == -1 else ""
        raise DataError(
            f"{self._where(hub_split)}: row {row}: {self.target_column} {value!r} is not a label of task {self.name!r}: "
            f"expected a class id 0..{len(self.labels) - 1} or one of {', '.join(self.labels)}{note}"
        )


class SST2(LabelWords):
    """SST-2 sentiment. Its hub test split has no labels, so the hub validation split (872
    sentences) is our test split and validation is carved from train (5% of distinct sentences)."""

    name = "sst2"
    hub_name = "stanfordnlp/sst2"
    source_column, target_column = "sentence", "label"
    labels = ("negative", "positive")
    split_map: ClassVar = {"train": "train", "validation": None, "test": "validation"}
    instruction = "Is the sentiment of this movie review negative or positive? Answer with one word."
    answer_cue = "Sentiment:"


class AGNews(LabelWords):
    """AG News topic (4 classes). The hub has train and test only: validation is carved from train."""

    name = "ag_news"
    hub_name = "fancyzhx/ag_news"
    source_column, target_column = "text", "label"
    labels = ("World", "Sports", "Business", "Sci/Tech")
    split_map: ClassVar = {"train": "train", "validation": None, "test": "test"}
    instruction = "Which topic is this news article about? Answer with one of: World, Sports, Business, Sci/Tech."
    answer_cue = "Topic:"
