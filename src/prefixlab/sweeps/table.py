"""The report's table and its choices: the overrides that vary between jobs, the metrics, the job
validation chooses (``selection``), the best job per metric and the spread over repeats.

Which way a metric is better comes from ``prefixlab.tasks.scoring.directions`` (the table the
Optuna callback reads too); a metric it does not know counts as higher-is-better here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from prefixlab.sweeps.jobs import Job, as_number
from prefixlab.tasks.scoring.directions import lower_is_better

PARAMETER_COLUMNS = ("trainable_params", "exported_params", "trainable_percent_of_lm")

# Overrides that only redraw randomness: the report averages over them (mean, spread per setting).
REPEAT_KEYS = ("seed", "task.subset_seed")


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def varying_overrides(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (a job without it ran the default)."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    return [k for k in keys if len({as_text(job.setting(k)) for job in jobs}) > 1]


def _logged_metrics(jobs: list[Job]) -> set[str]:
    return {k for job in jobs if job.metrics for k, v in job.metrics.items()
            if k.startswith(("val/", "test/")) and as_number(v) is not None and not isinstance(v, bool)}


def metric_names(jobs: list[Job]) -> list[str]:
    """The val/ and test/ metrics any job logged: the one that chooses (``selection``) and the test
    figure it reports first, then test, then validation metrics."""
    chosen = selection(jobs)
    first = [m for m in (chosen.metric, chosen.reported) if m]
    return sorted(_logged_metrics(jobs), key=lambda k: (k not in first, first.index(k) if k in first else 0,
                                                        not k.startswith("test/"), "zero_shot" in k, k))


@dataclass
class Selection:
    """How the report chooses the best job: ``metric`` (a val/ metric, or test/ when no job logged the
    validation one: ``fell_back``) and ``reported``, the test figure shown for the chosen job.
    ``optimized_on_test``: the jobs' own optimized_metric, when it was a test/ one."""
    metric: str | None
    reported: str | None
    fell_back: bool = False
    optimized_on_test: str | None = None


def selection(jobs: list[Job]) -> Selection:
    """Validation chooses: ``val/<name>`` for the jobs' optimized_metric (val/ or test/, the name is the
    same) or, without one, their task.primary_metric; the report shows that job's ``test/<name>``. Old
    runs that logged only ``test/<name>`` fall back to it (their report says the figure is inflated)."""
    logged = _logged_metrics(jobs)
    optimized = next((str(job.config["optimized_metric"]) for job in jobs if job.config.get("optimized_metric")), None)
    primary = next((str(job.config["task"]["primary_metric"]) for job in jobs if isinstance(job.config.get("task"), dict)
                    and job.config["task"].get("primary_metric")), None)
    name = optimized.split("/", 1)[1] if optimized and optimized.startswith(("val/", "test/")) else primary
    on_test = optimized if optimized and optimized.startswith("test/") else None
    if name is None:  # no config says: the first validation score logged (losses last)
        scores = sorted((m for m in logged if "zero_shot" not in m),
                        key=lambda m: (not m.startswith("val/"), lower_is_better(m), m))
        if not scores:
            return Selection(None, None)
        name = scores[0].split("/", 1)[1]
    val, test = f"val/{name}", f"test/{name}"
    reported = test if test in logged else None
    if val in logged:
        return Selection(val, reported, optimized_on_test=on_test)
    if test in logged:
        return Selection(test, test, fell_back=True, optimized_on_test=on_test)
    return Selection(None, None, optimized_on_test=on_test)


def best_jobs(jobs: list[Job], metrics: list[str]) -> dict[str, tuple[Job, float, int]]:
    """The best completed job per metric, its value and how many jobs tie with it (zero-shot
    metrics left out: they do not depend on the training); ties go to the first job."""
    best = {}
    for metric in metrics:
        if "zero_shot" in metric:
            continue
        scored = [(job, value) for job in jobs if job.status == "completed" and job.metrics
                  and (value := as_number(job.metrics.get(metric))) is not None and math.isfinite(value)]
        if scored:
            sign = 1 if lower_is_better(metric) else -1
            job, value = min(scored, key=lambda pair: sign * pair[1])
            best[metric] = (job, value, sum(v == value for _, v in scored))
    return best


def table(jobs: list[Job]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows: job, the varying overrides, status, metrics, parameter counts, steps, runtime, error."""
    keys, metrics = varying_overrides(jobs), metric_names(jobs)
    columns = ["job", *keys, "status", *metrics, *PARAMETER_COLUMNS, "steps", "runtime_s", "error"]
    rows = []
    for job in jobs:
        m = job.metrics or {}
        rows.append([job.label, *[job.setting(k) for k in keys], job.status, *[m.get(k) for k in metrics],
                     *[m.get(k) for k in PARAMETER_COLUMNS], m.get("steps", m.get("step")), m.get("runtime_s"), job.error])
    return columns, rows


def over_repeats(jobs: list[Job], metric: str) -> tuple[str, list[str], list[list[Any]]] | None:
    """Mean and spread of ``metric`` over the repeats (the first of ``REPEAT_KEYS`` that varies:
    seeds, data subsets), one row per setting of the other varying overrides; completed jobs
    with a finite value only. None when no repeat key varies."""
    keys = varying_overrides(jobs)
    repeat = next((k for k in REPEAT_KEYS if k in keys), None)
    if repeat is None:
        return None
    others = [k for k in keys if k != repeat]
    groups: dict[tuple[str, ...], list[float]] = {}
    for job in jobs:
        setting = tuple(as_text(job.setting(k)) for k in others)
        groups.setdefault(setting, [])
        value = as_number((job.metrics or {}).get(metric))
        if job.status == "completed" and value is not None and math.isfinite(value):
            groups[setting].append(value)
    columns = [*others, "runs", f"mean {metric}", "sd", "min", "max"]
    rows = []
    for setting, values in groups.items():
        n = len(values)
        mean = sum(values) / n if n else None
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        rows.append([*setting, n, mean, sd, min(values) if n else None, max(values) if n else None])
    return repeat, columns, rows


def varying_label(job: Job, keys: list[str]) -> str:
    """``3: prefix_length=10, method=prefix``: the job and what sets it apart."""
    return f"{job.label}: {differences(job, keys)}" if keys else job.label


def differences(job: Job, keys: list[str]) -> str:
    """``prefix_length=10, method=prefix``: the job's values of the varying overrides."""
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={as_text(job.setting(k))}" for k in keys)
