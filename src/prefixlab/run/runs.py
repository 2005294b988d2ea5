"""Run plumbing for the entry points: logger and trainer construction, the run summary,
and the run's result files. Plain functions over typed configs; no Hydra here."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from prefixlab.run.artifacts import atomic_write, atomic_write_json, atomic_write_jsonl
from prefixlab.config import LoggerConfig, TrainerConfig


class OutputDirError(OSError):
    """The run directory cannot be written."""


def check_writable(run_dir: Path) -> None:
    """Fail before any expensive work if the run directory cannot take files."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as error:
        raise OutputDirError(f"run directory {run_dir} is not writable ({error.strerror}); fix its permissions or free disk space") from error


def check_run_dir_creatable(run_dir: Path) -> None:
    """Fail with one line if ``run_dir`` cannot be created: Hydra creates it before any of our
    code runs and would answer a parent that is a file, or a read-only one, with a traceback."""
    existing = Path(os.path.abspath(run_dir))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"run directory {run_dir} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"run directory {run_dir} cannot be created: {existing} is not writable")


def check_free_space(run_dir: Path, needed_bytes: int) -> None:
    """Fail before training if the disk cannot take the checkpoints and exports of this run."""
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise OutputDirError(
            f"run directory {run_dir} has {free / 2**20:,.0f} MiB free; this run's checkpoint and export need "
            f"about {needed_bytes / 2**20:,.0f} MiB: free disk space or choose another hydra.run.dir"
        )


def storage_needed(counts: dict[str, Any]) -> int:
    """Bytes a run may write: the checkpoint (trainable parameters + two AdamW moments, float32)
    twice (an atomic save holds the old and the new file at once), the export, and 16 MiB of logs."""
    return 4 * (2 * 3 * counts["trainable_params"] + counts["exported_params"]) + 16 * 2**20


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file next to the target, then are renamed over it, so a run
    killed while saving keeps its previous ``last.ckpt`` whole. (Lightning's own save goes
    through fsspec, which stages the file in the system temp folder and copies it into place.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))


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


def build_trainer(config: TrainerConfig, logger, run_dir: Path, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        save_last=True,
        save_top_k=0,
        every_n_train_steps=config.checkpoint_every_n_steps or max(1, min(50, config.max_steps)),
        enable_version_counter=False,  # always last.ckpt, also when resuming from another folder's checkpoint
    )
    return pl.Trainer(
        default_root_dir=str(run_dir),
        max_steps=config.max_steps,
        max_epochs=-1,
        val_check_interval=config.val_check_interval,
        check_val_every_n_epoch=None if config.val_check_interval else 1,
        num_sanity_val_steps=0,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=config.precision,
        gradient_clip_val=config.gradient_clip_val or None,
        accumulate_grad_batches=config.accumulate_grad_batches,
        log_every_n_steps=config.log_every_n_steps,
        enable_progress_bar=config.enable_progress_bar,
        deterministic=config.deterministic,
        logger=logger,
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="step"), *callbacks],
        plugins=[AtomicCheckpointIO()],
    )


def is_global_zero(trainer: pl.Trainer | None) -> bool:
    """Only rank 0 writes a run's files (the other ranks hold the same prefix, kept in sync by
    DDP, and the same gathered predictions); before the trainer exists, Lightning's rank from
    the environment (LOCAL_RANK / RANK / SLURM_PROCID) decides."""
    if trainer is not None and hasattr(trainer, "is_global_zero"):
        return trainer.is_global_zero
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def check_launchable(trainer: pl.Trainer, in_sweep: bool) -> None:
    """Lightning starts the extra DDP processes of a local run by re-running this command line;
    in a sweep (-m) that would re-run the whole sweep in every child. Processes created by the
    cluster (SLURM through hydra/launcher=submitit_slurm with tasks_per_node = devices, or
    torchrun) are fine."""
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    if (in_sweep and isinstance(launcher, _SubprocessScriptLauncher) and launcher.num_processes > 1
            and not trainer.strategy.cluster_environment.creates_processes_externally):
        from prefixlab.config import ConfigError

        raise ConfigError(
            f"trainer.strategy={trainer.strategy.__class__.__name__} with {launcher.num_processes} processes cannot run "
            "inside a local sweep (-m): Lightning would start each extra process by re-running the whole sweep. "
            "Run each multi-process job on its own (no -m), or sweep with launcher=submitit_slurm "
            "(SLURM starts the processes: hydra.launcher.tasks_per_node = trainer.devices)"
        )


def run_summary(counts: dict[str, Any], batch_size: int, accumulate: int, devices: int, mean_tokens: float) -> str:
    effective = batch_size * accumulate * devices
    return (
        f"parameters: trainable {counts['trainable_params']:,} / LM {counts['lm_params']:,} "
        f"({counts['trainable_percent_of_lm']:.3f}%); exported prefix {counts['exported_params']:,} "
        f"({counts['exported_percent_of_lm']:.3f}%)\n"
        f"effective batch {effective} examples (batch {batch_size} x accumulate {accumulate} x devices {devices}), "
        f"about {effective * mean_tokens:,.0f} tokens per optimizer step"
    )


def write_results(run_dir: Path, metrics: dict, predictions: list[dict] | None) -> None:
    if predictions is not None:
        atomic_write_jsonl(run_dir / "predictions.jsonl", predictions)
    atomic_write_json(run_dir / "metrics.json", metrics)
