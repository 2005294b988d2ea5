"""One table of metric directions (``prefixlab.tasks.scoring.directions``): every metric a task
reports has one, and the sweep report and the Optuna callback read it alike."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import prefixlab.tasks
from prefixlab.sweeps import plots, report, table
from prefixlab.sweeps.optuna_callbacks import check_direction, metric_direction
from prefixlab.tasks import TASKS
from prefixlab.tasks.scoring.directions import DIRECTIONS, MAXIMIZE, MINIMIZE, direction, lower_is_better


def _task_classes() -> set[type]:
    """Every class in the modules of ``prefixlab.tasks`` with its own ``metric_names`` (the registry's
    tasks and any other)."""
    found = set(TASKS.values())
    for info in pkgutil.walk_packages(prefixlab.tasks.__path__, "prefixlab.tasks."):
        module = importlib.import_module(info.name)
        found |= {cls for _, cls in inspect.getmembers(module, inspect.isclass) if cls.__module__ == module.__name__}
    return {cls for cls in found if isinstance(getattr(cls, "metric_names", None), tuple)}


def _reported() -> list[str]:
    """Every metric a run logs: each task's metrics (also zero-shot), and the losses, as val/ and test/."""
    names = {name for cls in _task_classes() for name in cls.metric_names}
    assert {"rougeL", "bleu", "accuracy", "exact_match", "f1", "macro_f1", "cider"} <= names  # the classes were found
    return sorted(f"{stage}/{prefix}{name}" for stage in ("val", "test") for name in names | {"loss"}
                  for prefix in ("", "zero_shot_"))


def test_every_metric_a_task_reports_has_a_direction():
    missing = sorted({m for m in _reported() if direction(m) is None})
    assert not missing, f"add these to DIRECTIONS in tasks/scoring/directions.py: {missing}"


@pytest.mark.parametrize("metric", _reported() + ["val/perplexity", "test/wer", "test/cer", "train/loss",
                                                  "val/loss_epoch", "test/something_new"])
def test_the_report_and_optuna_agree(metric):
    way = direction(metric)
    assert metric_direction(metric) == way
    assert lower_is_better(metric) == (way == MINIMIZE)  # what the report ranks by (unknown: higher is better)
    if way is not None:
        check_direction(metric, way)  # the direction the table gives is the one Optuna accepts
        with pytest.raises(ValueError, match="does not fit"):
            check_direction(metric, MAXIMIZE if way == MINIMIZE else MINIMIZE)


def test_the_report_reads_the_same_table():
    assert table.lower_is_better is plots.lower_is_better is report.lower_is_better is lower_is_better


def test_the_table():
    assert direction("test/rougeL") == direction("val/zero_shot_bleu") == direction("test/macro_f1") == MAXIMIZE
    assert direction("val/loss") == direction("test/error") == direction("train/loss_step") == MINIMIZE
    assert direction("test/something_new") is None and not lower_is_better("test/something_new")
    assert set(DIRECTIONS.values()) == {MAXIMIZE, MINIMIZE}
