"""prefixlab-report: one table, the best jobs and the plots of a sweep.

    prefixlab-report multirun/2026-11-28/18-51-22-334819_p25418        # writes into the sweep folder
    prefixlab-report 'multirun/2026-11-28/*' --out reports/prefix_len   # several sweeps, one report
    make report                                                         # the newest sweep under multirun/

Reads every job folder (``<sweep>/<n>/``): ``.hydra/overrides.yaml`` and ``config.yaml``,
``metrics.json`` (status, metrics, parameter counts, runtime) and the step log
(``csv/metrics.csv``, or the W&B offline log for ``logger=wandb``). Writes ``report.md``,
``report.csv`` and PNG plots: metric vs prefix length per method (the paper's Figure 4) when
``method.prefix_length`` varies, metric vs training-set size (the low-data figure) when
``task.train_size`` varies, metric vs learning rate (per method: the reparameterization's
question) when ``optim.lr`` varies, the metric of every completed job as bars (a method
table at a glance), and the loss curves; and when seeds or data subsets vary (``seed``,
``task.subset_seed``), the metric's mean and spread over them per setting. Failed and unfinished jobs are rows with
their status; they never stop the report.

The best job is chosen on validation (``val/<metric>``, the metric the sweep optimized) and reported with
its test figures; runs that logged no validation metric fall back to test, and report.md says that this
inflates the figure (``selection``).
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import math
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from prefixlab.run.artifacts import atomic_write, atomic_write_text

NO_METRICS = "no metrics.json (running or killed)"
PARAMETER_COLUMNS = ("trainable_params", "exported_params", "trainable_percent_of_lm")
# Axes of the two figures: the override key, its label, and whether the x axis is logarithmic.
PREFIX_LENGTH, TRAIN_SIZE, LEARNING_RATE = "method.prefix_length", "task.train_size", "optim.lr"


class ReportError(ValueError):
    """An input the report cannot use at all (one line, naming the file)."""


@dataclass
class Job:
    path: Path
    label: str
    overrides: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)  # config-group choices (method: prefix), from hydra.yaml
    metrics: dict | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # unreadable files, shown in the error column

    @property
    def status(self) -> str:
        if self.metrics is None:
            return "unreadable" if any("metrics.json" in p for p in self.problems) else NO_METRICS
        return str(self.metrics.get("status", "unknown"))

    @property
    def error(self) -> str:
        return "; ".join([*([str(self.metrics["error"])] if self.metrics and self.metrics.get("error") else []), *self.problems])

    def setting(self, key: str) -> Any:
        """The value of a dotted key as this job ran it: a group's choice, else the resolved config's value,
        else the override as typed."""
        if key in self.choices:
            return self.overrides.get(key, self.choices[key])
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return self.overrides.get(key)
            node = node[part]
        return node


# ---- reading -------------------------------------------------------------------------------
def _warn(message: str) -> None:
    print(f"prefixlab-report: warning: {message}", file=sys.stderr)


def _read_yaml(path: Path, job: Job) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        job.problems.append(f"unreadable {path}")
        _warn(f"{path}: not valid YAML ({str(error).splitlines()[0]})")
        return None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def read_csv_history(run_dir: Path) -> list[dict[str, float]]:
    """Lightning's CSV log, with the logs a resumed run set aside first (``metrics.until-*.csv``)."""
    files = sorted(run_dir.glob("csv/metrics.until-*.csv")) + [run_dir / "csv" / "metrics.csv"]
    rows = []
    for path in files:
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                numbers = {k: n for k, v in row.items() if k and v not in ("", None) and (n := _number(v)) is not None}
                if numbers:
                    rows.append(numbers)
    return rows


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B transaction log (``run-<id>.wandb``, what offline mode writes).

    The file is ``:W&B`` + 2 magic bytes + a version byte, then LevelDB's log format: 32 KiB
    blocks of chunks (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last), each record a
    ``wandb_internal_pb2.Record``. wandb has no public reader for it (``wandb sync`` replays it)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ReportError(f"{path} is not a W&B transaction log")
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            position += left
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 1:
            payload = chunk
        elif kind == 2:
            pending = chunk
            continue
        elif kind == 3:
            pending += chunk
            continue
        elif kind == 4:
            payload, pending = pending + chunk, b""
        else:
            raise ReportError(f"{path}: unknown chunk type {kind} at byte {position - length - 7}")
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def _items(items) -> dict[str, Any]:
    """Record items as a dict; W&B flattens a logged dict (a table's reference) into items with a
    ``nested_key`` path (``["val/samples", "path"]``), put back together here."""
    out: dict[str, Any] = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


def read_wandb_run(path: Path) -> dict[str, Any]:
    """A W&B offline run's run record (name, group, tags), config, summary, history rows and exit code."""
    run: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "exit_code": None}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(name=record.run.display_name, group=record.run.run_group, tags=list(record.run.tags))
        elif kind == "config":
            run["config"].update(_items(record.config.update))
        elif kind == "summary":
            run["summary"].update(_items(record.summary.update))
        elif kind == "history":
            run["history"].append(_items(record.history.item))
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def read_wandb_history(run_dir: Path) -> list[dict[str, float]]:
    logs = sorted(run_dir.glob("wandb/*run-*/run-*.wandb"))
    if not logs:
        return []
    rows = []
    for row in read_wandb_run(logs[-1])["history"]:
        numbers = {k: n for k, v in row.items() if not isinstance(v, (dict, list)) and (n := _number(v)) is not None}
        if "trainer/global_step" in numbers:
            numbers["step"] = numbers["trainer/global_step"]
        rows.append(numbers)
    return rows


_REFERENCE = re.compile(r"(?<!\\)\$\{([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)\}")  # ${task.primary_metric}; never ${oc.env:X}


def _resolved(config: dict) -> dict:
    """Hydra saves the config with its interpolations (``optimized_metric: val/${task.primary_metric}``).
    Only references to other keys of the same config (``${a.b}``) are filled in, from the saved config
    itself; resolvers (``${oc.env:SECRET}``, ``${now:...}``) are never called and stay as written, so
    nothing from the environment reaches the report."""

    def lookup(dotted: str, seen: tuple[str, ...]) -> Any:
        node: Any = config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return fill(node, (*seen, dotted)) if dotted not in seen else None

    def fill(value: Any, seen: tuple[str, ...] = ()) -> Any:
        if isinstance(value, dict):
            return {k: fill(v, seen) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v, seen) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _REFERENCE.fullmatch(value)
        if whole:  # the whole value is one reference: keep the referenced value's type
            found = lookup(whole.group(1), seen)
            return value if found is None or isinstance(found, (dict, list)) else found

        def one(match: re.Match) -> str:
            found = lookup(match.group(1), seen)
            return match.group(0) if found is None or isinstance(found, (dict, list)) else str(found)

        return _REFERENCE.sub(one, value)

    return fill(config)


def read_job(path: Path, label: str) -> Job:
    job = Job(path=path, label=label)
    overrides = _read_yaml(path / ".hydra" / "overrides.yaml", job) or []
    for item in overrides if isinstance(overrides, list) else []:
        key, _, value = str(item).partition("=")
        job.overrides[key.lstrip("+~")] = value
    config = _read_yaml(path / ".hydra" / "config.yaml", job)
    job.config = _resolved(config) if isinstance(config, dict) else {}
    hydra = _read_yaml(path / ".hydra" / "hydra.yaml", job) or {}
    choices = hydra.get("hydra", {}).get("runtime", {}).get("choices", {}) if isinstance(hydra, dict) else {}
    job.choices = {k: str(v) for k, v in choices.items() if not k.startswith("hydra/")}
    metrics_file = path / "metrics.json"
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            if not isinstance(metrics, dict):
                raise ValueError("not a JSON object")
            job.metrics = metrics
        except (OSError, ValueError) as error:
            job.problems.append(f"unreadable {metrics_file}")
            _warn(f"{metrics_file}: not valid JSON ({error}); the job is listed as unreadable")
    try:
        job.history = read_csv_history(path) or read_wandb_history(path)
    except (OSError, ValueError, csv.Error, ReportError) as error:
        job.problems.append(f"unreadable step log in {path}")
        _warn(f"{path}: step log unreadable ({error})")
    return job


def _is_job_dir(path: Path) -> bool:
    return path.is_dir() and ((path / ".hydra").is_dir() or (path / "metrics.json").exists())


def find_jobs(sweep_dirs: list[Path]) -> list[Job]:
    """The job folders of each sweep, in job-number order; a run folder itself counts as one job."""
    jobs = []
    for sweep in sweep_dirs:
        if not sweep.is_dir():
            raise ReportError(f"{sweep} is not a directory")
        found = [sweep] if _is_job_dir(sweep) else sorted(
            (p for p in sweep.iterdir() if _is_job_dir(p)), key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
        if not found:
            raise ReportError(f"{sweep} has no job folders (expected <sweep>/<job number>/ with .hydra/ or metrics.json)")
        for path in found:
            label = path.name if len(sweep_dirs) == 1 else f"{sweep.name}/{path.name}"
            jobs.append(read_job(path, label))
    return jobs


# ---- the table -----------------------------------------------------------------------------
# Overrides that only redraw randomness: the report averages over them (mean, spread per setting).
REPEAT_KEYS = ("seed", "task.subset_seed")
def varying_overrides(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (a job without it ran the default)."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    return [k for k in keys if len({_text(job.setting(k)) for job in jobs}) > 1]


def _logged_metrics(jobs: list[Job]) -> set[str]:
    return {k for job in jobs if job.metrics for k, v in job.metrics.items()
            if k.startswith(("val/", "test/")) and _number(v) is not None and not isinstance(v, bool)}


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


LOWER_IS_BETTER = {"loss", "perplexity", "ppl", "error", "wer", "cer", "ter"}


def lower_is_better(metric: str) -> bool:
    """Losses and error rates go down; every other metric (ROUGE, BLEU, accuracy, F1) goes up."""
    return bool(LOWER_IS_BETTER.intersection(metric.rsplit("/", 1)[-1].lower().split("_")))


def best_jobs(jobs: list[Job], metrics: list[str]) -> dict[str, tuple[Job, float, int]]:
    """The best completed job per metric, its value and how many jobs tie with it (zero-shot
    metrics left out: they do not depend on the training); ties go to the first job."""
    best = {}
    for metric in metrics:
        if "zero_shot" in metric:
            continue
        scored = [(job, value) for job in jobs if job.status == "completed" and job.metrics
                  and (value := _number(job.metrics.get(metric))) is not None and math.isfinite(value)]
        if scored:
            sign = 1 if lower_is_better(metric) else -1
            job, value = min(scored, key=lambda pair: sign * pair[1])
            best[metric] = (job, value, sum(v == value for _, v in scored))
    return best


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
    reported = _number((job.metrics or {}).get(chosen.reported)) if chosen.reported else None
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
             if k.startswith("test/") and (n := _number(v)) is not None and not isinstance(v, bool) and math.isfinite(n)}
    if tests:
        lines += ["", f"Test figures of job {job.label}:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(k, float(v))} |" for k, v in sorted(tests.items(), key=lambda kv: ("zero_shot" in kv[0], kv[0]))]
    return lines


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


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
        setting = tuple(_text(job.setting(k)) for k in others)
        groups.setdefault(setting, [])
        value = _number((job.metrics or {}).get(metric))
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


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _text(value).replace("|", "\\|").replace("\n", " ")[:160]
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
    writer.writerows([[_text(v) for v in row] for row in rows])
    return out.getvalue()


# ---- plots ---------------------------------------------------------------------------------
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
        x, y = _number(job.setting(key)), _number((job.metrics or {}).get(metric))
        if job.status == "completed" and x is not None and y is not None and math.isfinite(y):
            name = ", ".join(f"{k.rsplit('.', 1)[-1]}={_text(job.setting(k))}" for k in others) or metric
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
            if job.status == "completed" and (value := _number((job.metrics or {}).get(metric))) is not None
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


def varying_label(job: Job, keys: list[str]) -> str:
    """``3: prefix_length=10, method=prefix``: the job and what sets it apart."""
    return f"{job.label}: {differences(job, keys)}" if keys else job.label


def differences(job: Job, keys: list[str]) -> str:
    """``prefix_length=10, method=prefix``: the job's values of the varying overrides."""
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_text(job.setting(k))}" for k in keys)


# ---- the report ----------------------------------------------------------------------------
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


def _test_figure(job: Job, metric: str) -> str:
    """``test/rougeL 0.3``: the test counterpart of a validation metric for this job ("" for a test metric)."""
    if not metric.startswith("val/"):
        return ""
    test = "test/" + metric.split("/", 1)[1]
    value = _number((job.metrics or {}).get(test))
    return f"{test} {value:.4g}" if value is not None else ""


def expand(patterns: list[str]) -> list[Path]:
    """Paths and globs, in the order given; a glob that matches nothing is kept (and reported as missing)."""
    dirs = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        dirs += [Path(m) for m in (matches or [pattern])]
    return list(dict.fromkeys(dirs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prefixlab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", help="multirun folder(s) or a glob of them")
    parser.add_argument("--out", type=Path, help="where report.md, report.csv and the plots go (default: the sweep folder)")
    parser.add_argument("--metric", help="the metric of the plots (default: the test figure of the sweep's "
                        "optimized_metric; the best job is always chosen on validation)")
    args = parser.parse_args(argv)
    sweeps = expand(args.sweeps)
    try:
        if args.out is None and len(sweeps) > 1:
            raise ReportError(f"{len(sweeps)} sweep folders given: choose where the report goes with --out")
        report = build_report(sweeps, args.out or sweeps[0], args.metric)
    except (ReportError, OSError) as error:
        sys.exit(f"prefixlab-report: error: {error}")
    print(f"report: {report} (report.csv and plots beside it)")


if __name__ == "__main__":
    main()
