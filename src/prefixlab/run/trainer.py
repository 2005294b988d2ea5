"""The Lightning Trainer of a run: its checkpointing (atomic), and whether it can launch here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from prefixlab.config import TrainerConfig
from prefixlab.run.artifacts import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file next to the target, then are renamed over it, so a run
    killed while saving keeps its previous ``last.ckpt`` whole. (Lightning's own save goes
    through fsspec, which stages the file in the system temp folder and copies it into place.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))


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
