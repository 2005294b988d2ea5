"""What a sweep prints when it ends, whatever launcher ran its jobs: how many jobs completed,
failed, were interrupted or killed (each job that did not complete named with its swept values
and its folder), the best job by the optimized metric (a validation metric; its direction from
``tasks/scoring/directions.py``), and the command that writes the full report.

Read from the job folders (``<sweep>/<n>/metrics.json`` and ``.hydra/``), which every launcher
leaves the same way, in this process or another (joblib, submitit). No Hydra here: the callback
in ``cli/sweep_callback.py`` calls ``summarize`` at the end of a ``-m`` run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from prefixlab.sweeps.jobs import Job, ReportError, find_jobs
from prefixlab.tasks.scoring.directions import MINIMIZE, direction

# The order of the counts in the first line; other statuses (no metrics.json, unreadable) follow.
STATUS_ORDER = ("completed", "failed", "interrupted", "killed", "fast_dev_run")
# a job that ended well: a result, or a smoke test (trainer.fast_dev_run) that ran through
FINE = ("completed", "fast_dev_run")


@dataclass
class SweepSummary:
    lines: list[str]
    jobs: int
    not_completed: int  # failed, interrupted, killed, or without a final metrics.json

    @property
    def all_completed(self) -> bool:
        return self.not_completed == 0


def _swept(jobs: list[Job]) -> dict[str, list[str]]:
    """Each job's overrides that differ between the jobs (all of them for a sweep of one job)."""
    keys = {key for job in jobs for key in job.overrides}
    varying = {key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1} or keys
    return {job.label: [f"{key}={value}" for key, value in job.overrides.items() if key in varying] for job in jobs}


def _optimized(job: Job) -> tuple[str | None, float | None]:
    """The job's optimized metric (``optimized_metric`` of its saved config) and its value, if it has one."""
    metric = job.config.get("optimized_metric") if isinstance(job.config, dict) else None
    if not isinstance(metric, str) or "${" in metric or not job.metrics:
        return (metric if isinstance(metric, str) else None), None
    try:
        value = float(job.metrics[metric])
    except (KeyError, TypeError, ValueError):
        return metric, None
    return metric, (value if math.isfinite(value) else None)


def summarize(sweep_dir: Path) -> SweepSummary:
    """The summary of the jobs under ``sweep_dir``; a sweep without job folders says so in one line."""
    sweep_dir = Path(sweep_dir)
    try:
        jobs = find_jobs([sweep_dir])
    except ReportError as error:
        return SweepSummary([f"sweep summary: no jobs ({error})"], 0, 0)
    statuses = [job.status for job in jobs]
    counts = {s: statuses.count(s) for s in sorted(set(statuses), key=lambda s: (s not in STATUS_ORDER,
                                                                                   STATUS_ORDER.index(s) if s in STATUS_ORDER else 0, s))}
    lines = [f"sweep summary: {len(jobs)} jobs, " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    swept = _swept(jobs)
    for job in jobs:
        if job.status not in FINE:
            detail = f" ({job.error})" if job.error else ""
            lines.append(f"  job #{job.label} ({' '.join(swept[job.label])}): {job.status}, in {job.path}{detail}")
    scored = [(job, *_optimized(job)) for job in jobs if job.status == "completed"]
    scored = [(job, metric, value) for job, metric, value in scored if value is not None]
    if scored:
        metric = scored[0][1]
        lower = direction(metric) == MINIMIZE  # unknown metrics: higher is better, as in the report
        same = [s for s in scored if s[1] == metric]  # a sweep over tasks may optimize different metrics
        best, _, value = (min if lower else max)(same, key=lambda s: s[2])
        others = f"; {len(scored) - len(same)} jobs optimize other metrics, see the report" if len(same) < len(scored) else ""
        lines.append(f"best job by {metric} ({'lower' if lower else 'higher'} is better): #{best.label} "
                     f"({' '.join(swept[best.label])}) {metric}={value:.4g}, in {best.path}{others}")
    elif jobs:
        lines.append("best job: none (no completed job has a finite optimized_metric)")
    lines.append(f"report: prefixlab-report {sweep_dir}")
    return SweepSummary(lines, len(jobs), sum(s not in FINE for s in statuses))
