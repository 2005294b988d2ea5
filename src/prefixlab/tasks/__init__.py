"""Task registry: a task is one module here plus one file in ``conf/task/``.

Each task class names the schema of its ``task.*`` keys (``options = E2EOptions``): the common keys
of ``TaskOptions`` plus its constructor's keyword arguments, declared in its module. ``build_task(name,
**options)`` takes those options (None: the task's default); an option a task does not take is an
error naming it.
"""

from __future__ import annotations

import inspect

from prefixlab.tasks.base import DataDirOptions, DataError, Example, GenerationTask, TaskOptions
from prefixlab.tasks.bbc_news import BBCHeadline, BBCTopic
from prefixlab.tasks.country_qa import CountryQA, CountryQAExtractive
from prefixlab.tasks.local_files import LocalFiles
from prefixlab.tasks.hub import AGNews, CNNDailyMail, SST2, XSum
from prefixlab.tasks.table_to_text import DART, E2E, WebNLG
from prefixlab.tasks.squad import SQuAD

TASKS: dict[str, type] = {t.name: t for t in (BBCHeadline, BBCTopic, E2E, DART, CountryQA, LocalFiles)}
TASKS.update({t.name: t for t in (XSum, CNNDailyMail, SST2, AGNews, WebNLG)})
TASKS.update({t.name: t for t in (CountryQAExtractive, SQuAD)})  # also extractive, for encoders



def task_schemas() -> dict[str, type]:
    """Every task's options schema by its ``schema_name``, with the base ``TaskOptions``: what
    ``config.register_configs`` stores in the ``task`` group."""
    return {TaskOptions.schema_name: TaskOptions, **{t.options.schema_name: t.options for t in TASKS.values()}}


def task_options(task_config: TaskOptions) -> dict:
    """The task's own options (the fields its schema adds to ``TaskOptions``): its constructor's arguments."""
    return task_config.task_options()


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


__all__ = ["TASKS", "DataDirOptions", "DataError", "Example", "GenerationTask", "TaskOptions", "build_task", "task_options",
           "task_schemas"]
