"""Task registry: a task is one module here plus one file in ``conf/task/``."""

from __future__ import annotations

from .base import DataError, Example, GenerationTask
from .bbc_news import BBCHeadline

TASKS: dict[str, type] = {BBCHeadline.name: BBCHeadline}


def build_task(name: str) -> GenerationTask:
    if name not in TASKS:
        raise DataError(f"task.name={name!r} is not a known task; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]()


__all__ = ["TASKS", "DataError", "Example", "GenerationTask", "build_task"]
