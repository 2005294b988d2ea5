"""A run's loggers: CSV, or one W&B run per job (tagged, with the parameter counts, finished in
a ``finally`` by the entry points), and the callbacks a logger needs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl

from prefixlab.config import LoggerConfig


def wandb_mode(config: LoggerConfig) -> str:
    """Offline unless the user asked otherwise, so a run never waits on a network."""
    if config.mode:
        return config.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def wandb_tags(task: str, model_name_or_path: str, random_init: bool, method: str, user_tags: Sequence[str] = ()) -> list[str]:
    """``task:<name>``, ``model:<name>``, ``method:<name>`` (W&B filters on them), then the user's tags."""
    model = model_name_or_path.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1] + ("-random" if random_init else "")
    tags = [f"task:{task}", f"model:{model}", f"method:{method}", *user_tags]
    return [tag[:64] for tag in dict.fromkeys(tags)]  # W&B rejects tags over 64 characters


def build_logger(config: LoggerConfig, run_dir: Path, run_name: str, resolved_config: dict, *,
                 group: str | None = None, job_name: str | None = None, tags: Sequence[str] = (),
                 parameter_counts: dict[str, Any] | None = None):
    """CSV, or one W&B run for this job: in ``config.group`` (else ``group``: the sweep; else the
    run name), named ``job_name`` (the job's overrides; else the run name), tagged ``tags``, with
    the resolved config and the parameter counts in its config."""
    if config.kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        previous = run_dir / "csv" / "metrics.csv"
        if previous.is_file():  # a resumed run: Lightning's CSV logger would delete the log so far
            previous.rename(previous.with_name(f"metrics.until-{time.strftime('%Y%m%d-%H%M%S')}.csv"))
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    from pytorch_lightning.loggers import WandbLogger

    logger = WandbLogger(
        project=config.project,
        entity=config.entity,
        group=config.group or group or run_name,
        tags=list(tags) or list(config.tags),
        name=job_name or run_name,
        save_dir=str(run_dir),
        mode=wandb_mode(config),
    )
    logger.experiment.config.update(resolved_config, allow_val_change=True)
    if parameter_counts:
        logger.experiment.config.update({"parameters": parameter_counts}, allow_val_change=True)
        logger.experiment.summary.update(parameter_counts)
    return logger


class SamplesTable(pl.Callback):
    """A W&B table of generated samples (input, prediction, references, zero-shot prediction
    where there is one) after each validation and after test, at most ``rows`` rows.

    Runs in ``on_*_end``, after the module's ``on_*_epoch_end`` has scored the rows and kept them
    in ``last_predictions`` (callbacks' epoch-end hooks run before the module's)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._logged: dict[str, int] = {}

    def _log(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        samples = getattr(pl_module, "last_predictions", {}).get(stage)
        if not samples or self._logged.get(stage) == id(samples):  # nothing new since the last table
            return
        self._logged[stage] = id(samples)
        zero_shot = samples[0].get("zero_shot_prediction") is not None
        columns = ["id", "input", "prediction", *(["zero_shot_prediction"] if zero_shot else []), "references"]
        data = [
            [str(r["id"]), r["input"], r["prediction"], *([r["zero_shot_prediction"]] if zero_shot else []),
             "\n".join(r["references"])]
            for r in samples[: self.rows]
        ]
        for logger in trainer.loggers:
            if hasattr(logger, "log_table"):
                logger.log_table(key=f"{stage}/samples", columns=columns, data=data, step=trainer.global_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._log(trainer, pl_module, "test")


def logger_callbacks(config: LoggerConfig) -> list[pl.Callback]:
    """Callbacks the logger needs: the samples table for W&B."""
    return [SamplesTable(config.samples_rows)] if config.kind == "wandb" and config.samples_rows > 0 else []


def finish_logger(logger, metrics_file: Path | None = None) -> None:
    """Close a W&B run (one run per job, also when the job failed), with what ``metrics_file``
    (the job's metrics.json) says in its summary: status, error, test metrics, runtime. A job
    that did not complete ends as a failed W&B run."""
    if logger is None or logger.__class__.__name__ != "WandbLogger":
        return
    import json

    run = logger.experiment
    outcome = {"status": "failed", "error": "no metrics.json was written"}
    if metrics_file is not None and metrics_file.is_file():
        try:
            outcome = json.loads(metrics_file.read_text())
        except (OSError, ValueError) as error:
            outcome = {"status": "failed", "error": f"unreadable {metrics_file}: {error}"}
    run.summary.update(outcome)
    run.finish(exit_code=0 if outcome.get("status") == "completed" else 1)
