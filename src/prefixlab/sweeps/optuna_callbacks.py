"""What the Optuna sweeper needs from prefixlab's jobs (conf/hparams_search/optuna.yaml).

A job that fails (a bad value, a diverged loss) records ``status: failed`` in its metrics.json
and returns NaN (``train.hydra_main``), so that Hydra's basic sweeper runs the other jobs.
hydra-optuna-sweeper 1.3 on optuna 2.10 would crash the whole study on that NaN: ``study.tell``
rejects NaN as a completed value, and the sweeper's fallback ``tell(FAIL, values=[nan])`` raises
again, outside its error handling. ``FailedTrialsToOptuna`` (a Hydra callback) turns the NaN into
a failed job in the job's own process (``on_job_end`` runs before any launcher hands the result
back), which the sweeper tells Optuna as a FAILED trial; the study goes on (with
``max_failure_rate: 1.0``). It also refuses a direction that does not fit the metric before any
trial runs (by exiting: Hydra only warns about exceptions raised in callbacks).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from prefixlab.tasks.scoring import directions


class TrialFailed(RuntimeError):
    """The job of an Optuna trial failed; its metrics.json says why."""


def metric_direction(metric: str) -> str | None:
    """``maximize`` or ``minimize`` for a metric name such as ``test/rougeL``; None if unknown. The
    table is ``prefixlab.tasks.scoring.directions``, the one the sweep report ranks jobs by."""
    return directions.direction(metric)


def check_direction(metric: str, direction: Any) -> None:
    """Raise ValueError if a single-objective ``direction`` optimizes ``metric`` the wrong way."""
    expected = metric_direction(metric)
    given = str(direction).rsplit(".", 1)[-1].lower()  # "maximize" or the Direction enum's str
    if isinstance(direction, (list, tuple)) or expected is None or given == expected:
        return
    raise ValueError(f"hydra.sweeper.direction={given} does not fit optimized_metric={metric}: "
                     f"higher is {'better' if expected == 'maximize' else 'worse'}; use hydra.sweeper.direction={expected}")


class FailedTrialsToOptuna(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        if "direction" in sweeper:
            try:
                check_direction(str(config.optimized_metric), sweeper.direction)
            except ValueError as error:
                # Hydra turns a callback's exceptions into warnings and goes on; SystemExit stops the study
                raise SystemExit(f"prefixlab-train: error: {error}") from None

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.COMPLETED:
            return
        value = job_return.return_value
        if isinstance(value, float) and math.isnan(value):
            metrics = Path(config.hydra.runtime.output_dir) / "metrics.json"
            job_return.status = JobStatus.FAILED
            job_return.return_value = TrialFailed(f"the job failed (it returned NaN); see {metrics}")
