"""The report's PNG plots (matplotlib, Agg), drawn to go into a paper as they are.

* metric against a varying setting (prefix length, training-set size, learning rate): one line
  per combination of the other varying overrides, the mean over repeats (seeds, data subsets)
  with error bars of one sample standard deviation where a setting has two or more runs, and
  the setting validation chose marked;
* the metric of every completed job: bars from zero for scores, dots on an axis fitted to the
  values for losses (a loss bar from zero hides the differences);
* the loss curves, one legend entry per job;
* for an Optuna sweep, the optimization history: each trial's objective and the best so far.

Axes read as numbers: integer ticks for prefix lengths and sizes, the swept values as ticks on
log axes, no offset notation. Each function returns why it was skipped, or None when it wrote
the figure (atomically).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from prefixlab.run.artifacts import atomic_write
from prefixlab.sweeps.jobs import Job, as_number
from prefixlab.sweeps.table import REPEAT_KEYS, as_text, varying_label, varying_overrides
from prefixlab.tasks.scoring.directions import lower_is_better

LEGEND_LABEL_CHARS = 48  # longer labels wrap: a legend must not be wider than the axes
MAX_TICKS = 12  # up to this many swept values, each gets its own labelled tick


def _figure(width: float = 6.4, height: float = 4.2):
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=120)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    plt.close(fig)
    return path


def _plain_y(ax, axis: str = "y") -> None:
    """Values as they are: no "1e-3 + offset" notation on the axis."""
    from matplotlib.ticker import ScalarFormatter

    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(formatter)


def _significant_digits(values: list[float]) -> int:
    """The fewest significant digits (4 to 8) at which values that differ also print differently."""
    distinct = len(set(values))
    return next((d for d in range(4, 9) if len({f"{v:.{d}g}" for v in values}) == distinct), 8)


def _readable_x(ax, values: list[float], log_x: bool) -> None:
    """Ticks at the swept values when there are few (``1e-4, 5e-4``; ``50, 100, 200``), integers
    only for integer settings (no 2.5 for a prefix length)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    distinct = sorted(set(values))
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    gaps = [b - a for a, b in zip(distinct, distinct[1:])]
    # on a linear axis, ticks closer than 1/25 of the range print over each other (1, 5, 10 ... 200)
    apart = log_x or not gaps or min(gaps) >= (distinct[-1] - distinct[0]) / 25
    if len(distinct) <= MAX_TICKS and apart:
        ax.xaxis.set_major_locator(FixedLocator(distinct))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    elif all(float(v).is_integer() for v in distinct) and not log_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend(ax, outside: bool = False) -> None:
    """One entry per label (a label drawn twice is listed once), long labels wrapped, and beside
    the axes when there are many entries."""
    handles, labels = ax.get_legend_handles_labels()
    unique: dict[str, object] = {}
    for handle, label in zip(handles, labels):
        unique.setdefault(label, handle)
    if not unique:
        return
    wrapped = ["\n".join(textwrap.wrap(label, LEGEND_LABEL_CHARS)) or label for label in unique]
    if outside or len(unique) > 6:
        columns = max(1, math.ceil(len(unique) / 18))
        ax.legend(list(unique.values()), wrapped, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncol=columns, frameon=False)
    else:
        ax.legend(list(unique.values()), wrapped, fontsize="small")


def _series_style(number: int) -> tuple[str, str]:
    """The colour and line style of a plot's ``number``-th series: past the 10 colours of the cycle
    the colours repeat and the line style changes, so no two of 40 series look the same."""
    return f"C{number % 10}", ("-", "--", ":", "-.")[(number // 10) % 4]


def _names_the_same(completed: list[Job], other: str, key: str) -> bool:
    """Whether the override ``other`` is ``key`` under another name: in every completed job its value
    is ``key``'s value (a config group option named for the value it sets:
    ``experiment/low_data/size='50'`` sets ``task.train_size`` 50, and the steps). Such an override
    is the x axis itself, not a series: kept, it gives each point a line of its own. An override
    that merely varies with ``key`` (each method its own learning rate) stays a series."""
    return bool(completed) and all(
        as_text(job.setting(other)).strip("'\"") == as_text(job.setting(key)) for job in completed)


def _series_keys(completed: list[Job], keys: list[str]) -> list[str]:
    """The keys that set the series apart, in order: a key whose value follows from the keys kept
    before it adds nothing to a label (``launcher=packed`` after ``method=prefix`` where every
    prefix job was packed and no fine-tuning job was) and is left out."""
    def series_count(names: list[str]) -> int:
        return len({tuple(as_text(job.setting(k)) for k in names) for job in completed})

    kept: list[str] = []
    for k in keys:
        if not kept or series_count([*kept, k]) > series_count(kept):
            kept.append(k)
    return kept


def series_spread(jobs: list[Job], key: str, metric: str) -> dict[str, list[tuple[float, float, float | None, int]]]:
    """Points (x, mean, sample sd or None, runs) of ``metric`` against ``key`` over the completed
    jobs, one series per combination of the other varying overrides that set series apart
    (``method=prefix``; ``_series_keys``), each sorted by x. Repeats (``REPEAT_KEYS``: seeds, data
    subsets) are not series of their own: their values at one x are averaged, as the paper's low-data figure does, and their spread is the error bar."""
    completed = [job for job in jobs if job.status == "completed"]
    others = _series_keys(completed, [k for k in varying_overrides(jobs)
                                      if k != key and k not in REPEAT_KEYS and not _names_the_same(completed, k, key)])
    values: dict[str, dict[float, list[float]]] = {}
    for job in jobs:
        x, y = as_number(job.setting(key)), as_number((job.metrics or {}).get(metric))
        if job.status == "completed" and x is not None and y is not None and math.isfinite(y):
            name = ", ".join(f"{k.rsplit('.', 1)[-1]}={as_text(job.setting(k))}" for k in others) or metric
            values.setdefault(name, {}).setdefault(x, []).append(y)
    series = {}
    for name, by_x in sorted(values.items()):
        points = []
        for x, ys in sorted(by_x.items()):
            mean = sum(ys) / len(ys)
            sd = math.sqrt(sum((y - mean) ** 2 for y in ys) / (len(ys) - 1)) if len(ys) > 1 else None
            points.append((x, mean, sd, len(ys)))
        series[name] = points
    return series


def series_by(jobs: list[Job], key: str, metric: str) -> dict[str, list[tuple[float, float]]]:
    """``series_spread`` without the spread: [(x, mean)] per series."""
    return {name: [(x, mean) for x, mean, _, _ in points] for name, points in series_spread(jobs, key, metric).items()}


def _chosen_point(jobs: list[Job], key: str, metric: str) -> tuple[str, float, str] | None:
    """(series, x, by which metric) of the setting validation prefers: the best mean of the
    validation counterpart of ``metric`` (``val/rougeL`` for ``test/rougeL``), or of ``metric``
    itself where no job logged one."""
    name = metric.split("/", 1)[-1]
    for chooser in (f"val/{name}", metric):
        points = [(series, x, mean) for series, pts in series_spread(jobs, key, chooser).items() for x, mean, _, _ in pts]
        if points:
            pick = (min if lower_is_better(chooser) else max)(points, key=lambda p: p[2])
            return pick[0], pick[1], chooser
    return None


def metric_vs_setting(jobs: list[Job], key: str, metric: str, path: Path, log_x: bool = False) -> str | None:
    """``metric`` against the value of ``key``, one line per combination of the other varying
    overrides (for prefix length: per method), error bars over repeats, the chosen setting
    marked. Returns why it was skipped, or None."""
    series = series_spread(jobs, key, metric)
    if not any(len(points) > 1 for points in series.values()):
        # also when it varies only with another override (each method its own lr): no line to draw
        return f"`{key}` does not take two values within any one setting of the other overrides (completed jobs)"
    plt, fig, ax = _figure()
    repeats = [k for k in REPEAT_KEYS if k in varying_overrides(jobs)]
    for number, (name, points) in enumerate(series.items()):
        xs, means = [p[0] for p in points], [p[1] for p in points]
        spread = [p[2] or 0.0 for p in points]
        color, linestyle = _series_style(number)
        ax.errorbar(xs, means, yerr=spread if any(spread) else None, marker="o", capsize=3, color=color,
                    linestyle=linestyle, label=name)
    chosen = _chosen_point(jobs, key, metric)
    if chosen is not None:
        series_name, x, chooser = chosen
        y = next(mean for px, mean, _, _ in series[series_name] if px == x) if series_name in series else None
        if y is not None:
            ax.plot([x], [y], marker="*", markersize=16, markerfacecolor="none", markeredgecolor="black",
                    linestyle="none", label=f"chosen by {chooser}" + (" (best mean)" if repeats else ""))
    _readable_x(ax, [p[0] for points in series.values() for p in points], log_x)
    _plain_y(ax)
    ax.set_xlabel(key)
    spread_note = f" (mean ± sd over {', '.join(repeats)})" if repeats else ""
    ax.set_ylabel(metric + spread_note)
    ax.set_title(f"{metric} vs {key.rsplit('.', 1)[-1].replace('_', ' ')}", fontsize="medium")
    ax.grid(alpha=0.3)
    _legend(ax, outside=len(series) > 4)
    _save(plt, fig, path)
    return None


def metric_per_job(jobs: list[Job], metric: str, path: Path, chosen: tuple[Job, str] | None = None) -> str | None:
    """``metric`` of every completed job, one row each, labelled with what sets the job apart
    (``method=adapter_3pct``); in orange the job ``chosen`` (the job, the metric that chose it:
    validation), else the best. Scores are bars from zero; losses (lower is better) are dots on an
    axis fitted to their range. Returns why it was skipped, or None."""
    keys = varying_overrides(jobs)
    rows = [(job, varying_label(job, keys), value) for job in jobs
            if job.status == "completed" and (value := as_number((job.metrics or {}).get(metric))) is not None
            and math.isfinite(value)]
    if len(rows) < 2:
        return f"fewer than two completed jobs have {metric}"
    plt, fig, ax = _figure(7.2, 1.2 + 0.35 * len(rows))
    lower = lower_is_better(metric)
    best = (min if lower else max)(value for _, _, value in rows)
    orange = [job is chosen[0] for job, _, _ in rows] if chosen else [value == best for _, _, value in rows]
    values = [value for _, _, value in rows]
    colors = ["C1" if mark else "C0" for mark in orange]
    positions = list(range(len(rows)))[::-1]  # the first job on top, as in the table
    if lower:
        ax.scatter(values, positions, color=colors, zorder=3)
        low, high = min(values), max(values)
        margin = (high - low) * 0.15 or abs(high) * 0.05 or 1.0
        ax.set_xlim(low - margin, high + margin)
        _plain_y(ax, "x")
    else:
        ax.barh(positions, values, color=colors)
    ax.set_yticks(positions, ["\n".join(textwrap.wrap(label, 60)) for _, label, _ in rows], fontsize="small")
    ax.set_ylim(-0.6, len(rows) - 0.4)
    digits = _significant_digits(values)
    for y, value in zip(positions, values):
        ax.annotate(f"{value:.{digits}g}", (value, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize="x-small")
    ax.set_xlabel(f"{metric} ({'lower' if lower else 'higher'} is better; "
                  + (f"orange: the job {chosen[1]} chose)" if chosen else "best in orange)"))
    ax.set_title(f"{metric} per job", fontsize="medium")
    ax.grid(alpha=0.3, axis="x")
    _save(plt, fig, path)
    return None


def loss_curves(jobs: list[Job], path: Path) -> str | None:
    """train/loss per step for every job that logged it (validation loss as dots of the same
    colour). Jobs that differ only in a repeat key (seed, data subset) are one series: one colour
    and one legend entry."""
    keys = varying_overrides(jobs)
    series_keys = [k for k in keys if k not in REPEAT_KEYS]
    curves = [(job, [(r["step"], r["train/loss"]) for r in job.history if "train/loss" in r and "step" in r],
               [(r["step"], r["val/loss"]) for r in job.history if "val/loss" in r and "step" in r]) for job in jobs]
    curves = [c for c in curves if c[1] or c[2]]
    if not curves:
        return "no job logged train/loss or val/loss per step (csv/metrics.csv or a W&B offline log)"
    repeated = len(series_keys) < len(keys)
    names = [(", ".join(f"{k.rsplit('.', 1)[-1]}={as_text(job.setting(k))}" for k in series_keys) or "all jobs")
             if repeated else varying_label(job, keys) for job, _, _ in curves]
    order = list(dict.fromkeys(names))
    plt, fig, ax = _figure(9.6, 4.2)  # room for the legend beside the axes
    for (job, train, val), name in zip(curves, names):
        number = order.index(name)
        color, linestyle = _series_style(number)
        ax.plot([s for s, _ in train], [v for _, v in train], color=color, linestyle=linestyle, label=name,
                alpha=0.75 if repeated else 1.0)
        ax.plot([s for s, _ in val], [v for _, v in val], linestyle="none", marker="o", color=color,
                label=None if train else name)
    repeats = [k for k in REPEAT_KEYS if k in keys]
    ax.set_title("train/loss (lines), val/loss (dots)" + (f"; one colour per setting, a line per {', '.join(repeats)}"
                                                         if repeated else ""), fontsize="medium")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _plain_y(ax)  # the axis fits the losses: it does not start at 0
    ax.grid(alpha=0.3)
    _legend(ax, outside=True)
    _save(plt, fig, path)
    return None


def optimization_history(jobs: list[Job], metric: str, path: Path) -> str | None:
    """An Optuna sweep's history: each trial's ``metric`` (its objective) in trial order, the best
    so far as a step line, failed trials as crosses on the lower edge. Returns why it was skipped."""
    trials = [(int(job.path.name), job) for job in jobs if job.path.name.isdigit()]
    scored = [(n, v) for n, job in trials if job.status == "completed"
              and (v := as_number((job.metrics or {}).get(metric))) is not None and math.isfinite(v)]
    if len(scored) < 2:
        return f"fewer than two trials have {metric}"
    lower = lower_is_better(metric)
    plt, fig, ax = _figure()
    ax.plot([n for n, _ in scored], [v for _, v in scored], marker="o", linestyle="none", color="C0", label="trial")
    best, so_far = [], None
    for n, v in scored:
        so_far = v if so_far is None else (min(so_far, v) if lower else max(so_far, v))
        best.append((n, so_far))
    ax.step([n for n, _ in best], [v for _, v in best], where="post", color="C1", label="best so far")
    failed = [n for n, job in trials if job.status != "completed"]
    if failed:
        ax.plot(failed, [min(v for _, v in scored)] * len(failed), marker="x", linestyle="none", color="C3",
                label=f"not completed ({len(failed)})")
    ax.set_xlabel("trial")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _plain_y(ax)
    ax.set_ylabel(f"{metric} ({'lower' if lower else 'higher'} is better)")
    ax.set_title(f"Optuna optimization history: {metric}", fontsize="medium")
    ax.grid(alpha=0.3)
    _legend(ax)
    _save(plt, fig, path)
    return None
