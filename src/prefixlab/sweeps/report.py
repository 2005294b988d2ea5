"""The sweep report: ``report.md`` and ``report.csv`` (plus the plots) of one or more sweeps.

``build_report`` is what ``prefixlab-report`` (``prefixlab.cli.report``) runs. It reads every job
folder (``sweeps/jobs.py``): ``.hydra/overrides.yaml`` and ``config.yaml``, ``metrics.json``
(status, metrics, parameter counts, runtime) and the step log (``csv/metrics.csv``, or the W&B
offline log for ``logger=wandb``). It writes ``report.md``, ``report.csv`` (the table:
``sweeps/table.py``) and PNG plots (``sweeps/plots.py``): metric vs prefix length per method (the
paper's Figure 4) when ``method.prefix_length`` varies, metric vs training-set size (the low-data
figure) when ``task.train_size`` varies, metric vs learning rate (per method: the
reparameterization's question) when ``optim.lr`` varies, the metric of every completed job as
bars (a method table at a glance), and the loss curves; and when seeds or data subsets vary
(``seed``, ``task.subset_seed``), the metric's mean and spread over them per setting. Failed and
unfinished jobs are rows with their status; they never stop the report.

The best job is chosen on validation (``val/<metric>``, the metric the sweep optimized) and reported with
its test figures; runs that logged no validation metric fall back to test, and report.md says that this
inflates the figure (``selection``). Which way a metric is better: ``prefixlab.tasks.scoring.directions``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from prefixlab.run.artifacts import atomic_write_text
from prefixlab.sweeps.jobs import Job, as_number, find_jobs
from prefixlab.sweeps.plots import loss_curves, metric_per_job, metric_vs_setting, optimization_history
from prefixlab.sweeps.table import (Selection, as_text, best_jobs, differences, metric_names, over_repeats, selection,
                                    table, varying_label, varying_overrides)
from prefixlab.tasks.scoring.directions import lower_is_better

# Axes of the two figures: the override key, its label, and whether the x axis is logarithmic.
PREFIX_LENGTH, TRAIN_SIZE, LEARNING_RATE = "method.prefix_length", "task.train_size", "optim.lr"


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return as_text(value).replace("|", "\\|").replace("\n", " ")[:160]
    if column.endswith("_params"):
        return f"{int(value):,}"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c, v) for c, v in zip(columns, row)) + " |" for row in rows]
    return "\n".join(lines)


def csv_text(columns: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[as_text(v) for v in row] for row in rows])
    return out.getvalue()


def selection_lines(jobs: list[Job], chosen: Selection, keys: list[str]) -> list[str]:
    """The report's "Best job" section: the job validation chose and that job's test figures."""
    lines = ["## Best job", ""]
    if chosen.optimized_on_test:
        lines += [f"The jobs ran with optimized_metric={chosen.optimized_on_test} (typed, or the old default): where a "
                  "search chose the trials by it (Optuna, a W&B sweep), it has seen the test set, which inflates even a "
                  "choice made on validation; a grid is unaffected.", ""]
    best = best_jobs(jobs, [chosen.metric]).get(chosen.metric) if chosen.metric else None
    if best is None:
        return lines + ["No completed job has a validation or test value of the selection metric "
                        f"({chosen.metric or 'none found'})."]
    job, value, ties = best
    where = f"job {job.label}" + (f" ({differences(job, keys)})" if keys else "")
    tied = f" (tied with {ties - 1} more on {chosen.metric}: the first is taken)" if ties > 1 else ""
    figures = [f"{chosen.metric} {value:.4g}"]
    reported = as_number((job.metrics or {}).get(chosen.reported)) if chosen.reported else None
    if chosen.reported and chosen.reported != chosen.metric:
        figures.append(f"{chosen.reported} {reported:.4g}" if reported is not None else f"no {chosen.reported}")
    if chosen.fell_back:
        name = chosen.metric.split("/", 1)[1]
        lines.append(f"Best by {chosen.metric}: no job logged val/{name}, so selection fell back to the test metric, "
                     f"which inflates the figure (the test set both chose the job and scores it): "
                     f"{where}{tied}, {', '.join(figures)}")
    else:
        lines.append(f"Best by {chosen.metric} (validation chooses; the test figures are that job's): "
                     f"{where}{tied}, {', '.join(figures)}")
    tests = {k: v for k, v in (job.metrics or {}).items()
             if k.startswith("test/") and (n := as_number(v)) is not None and not isinstance(v, bool) and math.isfinite(n)}
    if tests:
        lines += ["", f"Test figures of job {job.label}:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(k, float(v))} |" for k, v in sorted(tests.items(), key=lambda kv: ("zero_shot" in kv[0], kv[0]))]
    return lines


def build_report(sweep_dirs: list[Path], out: Path, metric: str | None = None) -> Path:
    jobs = find_jobs(sweep_dirs)
    columns, rows = table(jobs)
    metrics = metric_names(jobs)
    chosen = selection(jobs)
    # the plots show the test figures (report on test); the best job is chosen on validation (below)
    metric = (metric or chosen.reported or chosen.metric or next((m for m in metrics if m.startswith("test/")), None)
              or (metrics[0] if metrics else None))
    # each metric's own best, for reading: validation metrics only, unless no job logged one (old runs)
    per_metric = [m for m in metrics if m.startswith("val/")] or metrics
    best = best_jobs(jobs, per_metric)
    keys = varying_overrides(jobs)

    plots, skipped = [], []
    figures = [("metric_vs_prefix_length.png", f"{metric} vs prefix length", PREFIX_LENGTH, False),
               ("metric_vs_train_size.png", f"{metric} vs training-set size", TRAIN_SIZE, True),
               ("metric_vs_learning_rate.png", f"{metric} vs learning rate", LEARNING_RATE, True)]
    for name, title, key, log_x in figures:
        why = "no job has a metric" if metric is None else metric_vs_setting(jobs, key, metric, out / name, log_x)
        if why:
            skipped.append((title, why))
            (out / name).unlink(missing_ok=True)  # a figure from an earlier report of this folder
        else:
            plots.append((title, name))
    picked = best_jobs(jobs, [chosen.metric]).get(chosen.metric) if chosen.metric else None
    for title, name, why in ((f"{metric} per job", "metric_per_job.png", "no job has a metric" if metric is None else
                              metric_per_job(jobs, metric, out / "metric_per_job.png", picked and (picked[0], chosen.metric))),
                             ("loss curves", "loss_curves.png", loss_curves(jobs, out / "loss_curves.png"))):
        if why:
            skipped.append((title, why))
            (out / name).unlink(missing_ok=True)
        else:
            plots.append((title, name))

    if chosen.metric and any(is_optuna_sweep(d) for d in sweep_dirs):
        name = "optimization_history.png"
        why = optimization_history(jobs, chosen.metric, out / name)
        if why:
            skipped.append(("Optuna optimization history", why))
            (out / name).unlink(missing_ok=True)
        else:
            plots.append((f"Optuna optimization history ({chosen.metric})", name))

    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    lines = [
        "# Sweep report",
        "",
        "Sweep: " + ", ".join(f"`{d}`" for d in sweep_dirs),
        "",
        f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
        "",
        markdown_table(columns, rows),
        "",
        *selection_lines(jobs, chosen, keys),
        "",
        "## Best job per validation metric" if any(m.startswith("val/") for m in per_metric)
        else "## Best job per metric" + (" (no validation metrics: chosen on test, inflated)" if per_metric else ""),
        "",
    ]
    if best:
        lines += ["| metric | better | job | value | that job's test figure |", "|---|---|---|---|---|"]
        lines += [f"| {m} | {'lower' if lower_is_better(m) else 'higher'} | {varying_label(job, keys)}"
                  f"{f' (tied with {ties - 1} more)' if ties > 1 else ''} | {value:.4g} | {_test_figure(job, m)} |"
                  for m, (job, value, ties) in best.items()]
    else:
        lines.append("No completed job has a metric.")
    repeats = over_repeats(jobs, metric) if metric else None
    if repeats:
        repeat, repeat_columns, repeat_rows = repeats
        lines += ["", f"## Over `{repeat}`", "",
                  f"{metric} per setting: mean, sample standard deviation (sd), min and max over the values of "
                  f"`{repeat}` (completed jobs only; `runs` counts them).", "",
                  markdown_table(repeat_columns, repeat_rows)]
    lines += ["", "## Plots", ""]
    lines += [f"### {title}\n\n![{title}]({name})\n" for title, name in plots]
    lines += [f"- skipped {title}: {why}" for title, why in skipped]
    atomic_write_text(out / "report.md", "\n".join(lines).rstrip() + "\n")
    atomic_write_text(out / "report.csv", csv_text(columns, rows))
    return out / "report.md"


def is_optuna_sweep(sweep_dir: Path) -> bool:
    """Whether Hydra's Optuna sweeper ran this sweep (its ``multirun.yaml``, read as plain YAML:
    no resolver runs). Its jobs are then trials, numbered in the order Optuna proposed them."""
    import yaml

    try:
        saved = yaml.safe_load((Path(sweep_dir) / "multirun.yaml").read_text(encoding="utf-8"))
        return "optuna" in str(saved["hydra"]["sweeper"]["_target_"]).lower()
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return False


def _test_figure(job: Job, metric: str) -> str:
    """``test/rougeL 0.3``: the test counterpart of a validation metric for this job ("" for a test metric)."""
    if not metric.startswith("val/"):
        return ""
    test = "test/" + metric.split("/", 1)[1]
    value = as_number((job.metrics or {}).get(test))
    return f"{test} {value:.4g}" if value is not None else ""
