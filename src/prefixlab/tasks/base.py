"""What every task provides: examples per split, an instruction, and a scorer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """Task data is missing or malformed; the message names the file, split and field."""


@dataclass(frozen=True)
class Example:
    """One source -> target pair. ``references``: every acceptable target (multi-reference tasks)."""

    id: str
    source: str
    target: str
    references: tuple[str, ...]


class GenerationTask(Protocol):
    name: str
    instruction: str  # what a zero-shot prompt asks for; the source follows it
    answer_cue: str  # ends a plain (non-chat) prompt, e.g. "Headline:"
    metric_names: tuple[str, ...]

    def load_split(self, split: str) -> list[Example]: ...

    score: Callable[[list[str], list[tuple[str, ...]]], dict[str, float]]
