"""Run plumbing for the entry points, one module per concern: ``storage`` (can the run directory
take the run), ``trainer`` (the Lightning Trainer, atomic checkpoints, launchability), ``loggers``
(CSV / W&B), ``results`` (run summary, result files). This module re-exports them all: entry
points, sweeps and tests import them from here (and test harnesses patch ``runs.build_trainer``)."""

from __future__ import annotations

from prefixlab.run.loggers import SamplesTable, build_logger, finish_logger, logger_callbacks, wandb_mode, wandb_tags
from prefixlab.run.results import run_summary, write_results
from prefixlab.run.storage import OutputDirError, check_free_space, check_run_dir_creatable, check_writable, storage_needed
from prefixlab.run.trainer import AtomicCheckpointIO, build_trainer, check_launchable, is_global_zero

__all__ = [
    "AtomicCheckpointIO", "OutputDirError", "SamplesTable", "build_logger", "build_trainer", "check_free_space",
    "check_launchable", "check_run_dir_creatable", "check_writable", "finish_logger", "is_global_zero",
    "logger_callbacks", "run_summary", "storage_needed", "wandb_mode", "wandb_tags", "write_results",
]
