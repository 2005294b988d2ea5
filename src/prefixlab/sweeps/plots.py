"""The report's PNG plots (matplotlib, Agg): metric against a varying setting (prefix length,
training-set size, learning rate), the metric of every completed job as bars, and the loss
curves. Each returns why it was skipped, or None when it wrote the figure (atomically).
"""

from __future__ import annotations

import math
from pathlib import Path

from prefixlab.run.artifacts import atomic_write
from prefixlab.sweeps.jobs import Job, as_number
from prefixlab.sweeps.table import REPEAT_KEYS, as_text, varying_label, varying_overrides
from prefixlab.tasks.scoring.directions import lower_is_better

def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6.4, 4.2), dpi=120)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def series_by(jobs: list[Job], key: str, metric: str) -> dict[str, list[tuple[float, float]]]:
    """Points (value of ``key``, ``metric``) of the completed jobs, one series per combination of the
    other varying overrides (``method=prefix``, ``method=prefix_flat``), each sorted by x. Repeats
    (``REPEAT_KEYS``: seeds, data subsets) are not series of their own: their values at one x
    are averaged, as the paper's low-data figure does."""
    others = [k for k in varying_overrides(jobs) if k != key and k not in REPEAT_KEYS]
    values: dict[str, dict[float, list[float]]] = {}
    for job in jobs:
        x, y = as_number(job.setting(key)), as_number((job.metrics or {}).get(metric))
        if job.status == "completed" and x is not None and y is not None and math.isfinite(y):
            name = ", ".join(f"{k.rsplit('.', 1)[-1]}={as_text(job.setting(k))}" for k in others) or metric
            values.setdefault(name, {}).setdefault(x, []).append(y)
    return {name: sorted((x, sum(ys) / len(ys)) for x, ys in by_x.items()) for name, by_x in sorted(values.items())}


def metric_vs_setting(jobs: list[Job], key: str, metric: str, path: Path, log_x: bool = False) -> str | None:
    """``metric`` against the value of ``key``, one line per combination of the other varying
    overrides (for prefix length: per method). Returns why it was skipped, or None."""
    series = series_by(jobs, key, metric)
    if not any(len(points) > 1 for points in series.values()):
        # also when it varies only with another override (each method its own lr): no line to draw
        return f"`{key}` does not take two values within any one setting of the other overrides (completed jobs)"
    plt, fig, ax = _figure()
    for name, points in series.items():
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    repeats = [k for k in REPEAT_KEYS if k in varying_overrides(jobs)]
    ax.set_ylabel(metric + (f" (mean over {', '.join(repeats)})" if repeats else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    _save(plt, fig, path)
    return None


def metric_per_job(jobs: list[Job], metric: str, path: Path, chosen: tuple[Job, str] | None = None) -> str | None:
    """``metric`` of every completed job as one horizontal bar each, labelled with what sets the
    job apart (``method=adapter_3pct``); in orange the job ``chosen`` (the job, the metric that chose
    it: validation), else the best bar. Returns why it was skipped, or None."""
    keys = varying_overrides(jobs)
    bars = [(job, varying_label(job, keys), value) for job in jobs
            if job.status == "completed" and (value := as_number((job.metrics or {}).get(metric))) is not None
            and math.isfinite(value)]
    if len(bars) < 2:
        return f"fewer than two completed jobs have {metric}"
    plt, fig, ax = _figure()
    best = (min if lower_is_better(metric) else max)(value for _, _, value in bars)
    orange = [job is chosen[0] for job, _, _ in bars] if chosen else [value == best for _, _, value in bars]
    bars = [(label, value) for _, label, value in bars]
    positions = range(len(bars))[::-1]  # the first job on top, as in the table
    ax.barh(list(positions), [value for _, value in bars], color=["C1" if mark else "C0" for mark in orange])
    ax.set_yticks(list(positions), [label for label, _ in bars], fontsize="small")
    for y, (_, value) in zip(positions, bars):
        ax.annotate(f"{value:.4g}", (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize="x-small")
    ax.set_xlabel(f"{metric} ({'lower' if lower_is_better(metric) else 'higher'} is better; "
                  + (f"orange: the job {chosen[1]} chose)" if chosen else "best in orange)"))
    ax.grid(alpha=0.3, axis="x")
    fig.set_size_inches(7.2, 1.2 + 0.35 * len(bars))
    _save(plt, fig, path)
    return None


def loss_curves(jobs: list[Job], path: Path) -> str | None:
    """train/loss per step for every job that logged it (validation loss as points)."""
    keys = varying_overrides(jobs)
    labelled = {id(job): varying_label(job, keys) for job in jobs}
    curves = [(job, [(r["step"], r["train/loss"]) for r in job.history if "train/loss" in r and "step" in r],
               [(r["step"], r["val/loss"]) for r in job.history if "val/loss" in r and "step" in r]) for job in jobs]
    curves = [c for c in curves if c[1] or c[2]]
    if not curves:
        return "no job logged train/loss or val/loss per step (csv/metrics.csv or a W&B offline log)"
    plt, fig, ax = _figure()
    for number, (job, train, val) in enumerate(curves):
        color = f"C{number % 10}"
        ax.plot([s for s, _ in train], [v for _, v in train], color=color, label=labelled[id(job)])
        ax.plot([s for s, _ in val], [v for _, v in val], linestyle="--", marker="o", color=color,
                label=None if train else labelled[id(job)])
    ax.set_title("train/loss (lines), val/loss (dots)", fontsize="medium")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    fig.set_size_inches(9.6, 4.2)  # room for the legend beside the axes
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(plt, fig, path)
    return None
