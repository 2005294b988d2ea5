"""SQuAD v1.1 (Rajpurkar et al., 2016): questions on Wikipedia paragraphs, answered by a span.

Extractive for encoders (``load_spans``: the gold span from ``answer_start``), generative for
LMs (``load_split``: question + passage -> answer). Both are scored against every annotator's
answer with SQuAD's normalization (exact match, token F1).

Data: ``rajpurkar/squad`` from the Hugging Face hub (``datasets.load_dataset``, cached after the
first download), or ``task.data_dir``: a folder with the released ``train-v1.1.json`` and
``dev-v1.1.json``. Splits: the official dev set is our test split (SQuAD's test set is hidden);
the official train set is split by article title with ``task.split_seed``, 10% of the titles
into validation, so no article is in two splits.
"""

from __future__ import annotations

import json
import math
import random
from functools import lru_cache
from pathlib import Path

from prefixlab.tasks.scoring import squad
from prefixlab.tasks.base import SPLITS, DataDirOptions, DataError, Example
from prefixlab.tasks.spans import SpanExample, spans_to_text_example

HUB_NAME = "rajpurkar/squad"
RELEASED_FILES = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}  # hub split -> released file
VALIDATION_SHARE = 0.1


def _hub_rows(hub_split: str) -> list[dict]:
    try:
        import datasets
    except ImportError as error:
        raise DataError(f"task squad needs the 'datasets' package to load {HUB_NAME!r}; or set task.data_dir") from error
    try:
        return list(datasets.load_dataset(HUB_NAME, split=hub_split))
    except Exception as error:  # offline, not cached, renamed: one line naming the dataset and the fix
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise DataError(
            f"task squad: could not load {HUB_NAME!r} ({hub_split}) from the Hugging Face hub "
            f"({type(error).__name__}: {first_line}); run once where the hub is reachable (datasets caches it), "
            f"or set task.data_dir to a folder with SQuAD v1.1's {' and '.join(RELEASED_FILES.values())}"
        ) from error


def _file_rows(data_dir: Path, hub_split: str) -> list[dict]:
    """The released JSON flattened into the hub's rows (id, title, context, question, answers)."""
    path = data_dir / RELEASED_FILES[hub_split]
    if not path.is_file():
        raise DataError(f"task.data_dir={str(data_dir)!r}: {path.name} is missing (SQuAD v1.1 needs {', '.join(RELEASED_FILES.values())})")
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        return [
            {"id": qa["id"], "title": article["title"], "context": paragraph["context"], "question": qa["question"],
             "answers": {"text": [a["text"] for a in qa["answers"]], "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]
        ]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not SQuAD v1.1 JSON ({type(error).__name__}: {error})") from error


@lru_cache(maxsize=4)
def squad_rows(hub_split: str, data_dir: str | None = None) -> tuple[dict, ...]:
    rows = _file_rows(Path(data_dir).expanduser(), hub_split) if data_dir else _hub_rows(hub_split)
    if not rows:
        raise DataError(f"SQuAD {hub_split} split has no rows")
    return tuple(rows)


def validation_titles(titles, seed: int) -> set[str]:
    """10% of the distinct titles (at least one), chosen by a seeded shuffle of the sorted titles."""
    ordered = sorted(set(titles))
    random.Random(seed).shuffle(ordered)
    return set(ordered[: max(1, math.ceil(VALIDATION_SHARE * len(ordered)))])


def to_span_example(row: dict) -> SpanExample:
    """The first annotation whose ``answer_start`` really points at its text is the training span;
    every answer text is a reference."""
    texts, starts = list(row["answers"]["text"]), list(row["answers"]["answer_start"])
    references = tuple(dict.fromkeys(t for t in texts if t.strip()))
    for text, start in zip(texts, starts):
        if text.strip() and row["context"][start: start + len(text)] == text:
            return SpanExample(str(row["id"]), row["question"], row["context"], int(start), text, references)
    # no annotation fits: SpanExample's own check names the example and what is wrong
    return SpanExample(str(row["id"]), row["question"], row["context"], int(starts[0]) if starts else -1,
                       texts[0] if texts else "", references)


class SQuAD:
    name = "squad"
    options = DataDirOptions
    instruction = "Answer the question with a short span copied from the passage."
    answer_cue = "Answer:"
    score = staticmethod(squad)
    metric_names = ("exact_match", "f1")

    def __init__(self, data_dir: str | None = None, split_seed: int = 0) -> None:
        self.data_dir = data_dir
        self.split_seed = split_seed

    def load_spans(self, split: str) -> list[SpanExample]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        if split == "test":
            return [to_span_example(r) for r in squad_rows("validation", self.data_dir)]
        rows = squad_rows("train", self.data_dir)
        held_out = validation_titles([r["title"] for r in rows], self.split_seed)
        return [to_span_example(r) for r in rows if (r["title"] in held_out) == (split == "validation")]

    def load_split(self, split: str) -> list[Example]:
        return [spans_to_text_example(e) for e in self.load_spans(split)]
