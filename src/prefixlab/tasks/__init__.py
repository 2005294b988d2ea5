"""Task registry: a task is one module here plus one file in ``conf/task/``.

``build_task(name, **options)``: the options are the task-specific fields of TaskConfig
(``data_dir``, ``split_seed``, local files and columns); None means "the task's default",
and an option a task does not take is an error naming it.
"""

from __future__ import annotations

import inspect

from prefixlab.tasks.base import DataError, Example, GenerationTask
from prefixlab.tasks.bbc_news import BBCHeadline, BBCTopic
from prefixlab.tasks.country_qa import CountryQA, CountryQAExtractive
from prefixlab.tasks.local_files import LocalFiles
from prefixlab.tasks.hub import AGNews, CNNDailyMail, SST2, XSum
from prefixlab.tasks.table_to_text import DART, E2E, WebNLG
from prefixlab.tasks.squad import SQuAD

TASKS: dict[str, type] = {t.name: t for t in (BBCHeadline, BBCTopic, E2E, DART, CountryQA, LocalFiles)}
TASKS.update({t.name: t for t in (XSum, CNNDailyMail, SST2, AGNews, WebNLG)})
TASKS.update({t.name: t for t in (CountryQAExtractive, SQuAD)})  # also extractive, for encoders

# TaskConfig fields passed to the task's constructor (the rest configure the datamodule).
TASK_OPTIONS = ("data_dir", "split_seed", "train_file", "validation_file", "test_file", "source_column",
                "target_column", "file_format", "instruction")
TASK_OPTIONS += ("train_topics", "test_topics", "test_categories")


def task_options(task_config) -> dict:
    """The task-specific options of a TaskConfig (or any object with those attributes) as a dict."""
    return {key: getattr(task_config, key, None) for key in TASK_OPTIONS}


def build_task(name: str, **options) -> GenerationTask:
    if name not in TASKS:
        raise DataError(f"task.name={name!r} is not a known task; known: {', '.join(sorted(TASKS))}")
    given = {key: value for key, value in options.items() if value is not None}
    parameters = inspect.signature(TASKS[name].__init__).parameters.values()
    accepted = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise DataError(
            f"task.{unknown[0]}={given[unknown[0]]!r} does not apply to task {name!r}"
            f" (it takes: {', '.join(sorted(accepted)) or 'no options'})"
        )
    return TASKS[name](**given)


__all__ = ["TASKS", "TASK_OPTIONS", "DataError", "Example", "GenerationTask", "build_task", "task_options"]
