"""Run plumbing for the entry points: logger and trainer construction, the run summary,
and the run's result files. Plain functions over typed configs; no Hydra here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from .artifacts import atomic_write_json, atomic_write_jsonl
from .config import LoggerConfig, TrainerConfig


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


def wandb_mode(config: LoggerConfig) -> str:
    """Offline unless the user asked otherwise, so a run never waits on a network."""
    if config.mode:
        return config.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def build_logger(config: LoggerConfig, run_dir: Path, run_name: str, resolved_config: dict):
    if config.kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    from pytorch_lightning.loggers import WandbLogger

    logger = WandbLogger(
        project=config.project,
        entity=config.entity,
        group=config.group,
        tags=list(config.tags),
        name=run_name,
        save_dir=str(run_dir),
        mode=wandb_mode(config),
    )
    logger.experiment.config.update(resolved_config, allow_val_change=True)
    return logger


def finish_logger(logger) -> None:
    """Close a W&B run (one run per job, also when the job failed)."""
    if logger is not None and logger.__class__.__name__ == "WandbLogger":
        import wandb

        wandb.finish()


def build_trainer(config: TrainerConfig, logger, run_dir: Path) -> pl.Trainer:
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        save_last=True,
        save_top_k=0,
        every_n_train_steps=max(1, min(50, config.max_steps)),
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
        precision=config.precision,
        gradient_clip_val=config.gradient_clip_val or None,
        accumulate_grad_batches=config.accumulate_grad_batches,
        log_every_n_steps=config.log_every_n_steps,
        enable_progress_bar=config.enable_progress_bar,
        deterministic=config.deterministic,
        logger=logger,
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="step")],
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
