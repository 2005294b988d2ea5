"""Reading a sweep for the report: one ``Job`` per job folder (``<sweep>/<n>/``).

A job folder holds ``.hydra/overrides.yaml``, ``config.yaml`` and ``hydra.yaml``, ``metrics.json``
(status, metrics, parameter counts, runtime) and the step log (``csv/metrics.csv``, or the W&B
offline log for ``logger=wandb``). Unreadable files become a warning and a problem on the job;
they never stop the report. Saved configs are resolved without running OmegaConf resolvers
(``_resolved``), so nothing from the environment reaches the report.
"""

from __future__ import annotations

import csv
import json
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

NO_METRICS = "no metrics.json (running or killed)"


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


def as_number(value: Any) -> float | None:
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
                numbers = {k: n for k, v in row.items() if k and v not in ("", None) and (n := as_number(v)) is not None}
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
        numbers = {k: n for k, v in row.items() if not isinstance(v, (dict, list)) and (n := as_number(v)) is not None}
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


def is_job_dir(path: Path) -> bool:
    """A run folder: Hydra's ``.hydra/`` or prefixlab's ``metrics.json`` in it."""
    return path.is_dir() and ((path / ".hydra").is_dir() or (path / "metrics.json").exists())


def find_jobs(sweep_dirs: list[Path]) -> list[Job]:
    """The job folders of each sweep, in job-number order; a run folder itself counts as one job."""
    jobs = []
    for sweep in sweep_dirs:
        if not sweep.is_dir():
            raise ReportError(f"{sweep} is not a directory")
        found = [sweep] if is_job_dir(sweep) else sorted(
            (p for p in sweep.iterdir() if is_job_dir(p)), key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
        if not found:
            raise ReportError(f"{sweep} has no job folders (expected <sweep>/<job number>/ with .hydra/ or metrics.json)")
        for path in found:
            label = path.name if len(sweep_dirs) == 1 else f"{sweep.name}/{path.name}"
            jobs.append(read_job(path, label))
    return jobs
