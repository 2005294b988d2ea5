"""The Lightning Trainer of a run: its checkpointing (atomic), and whether it can launch here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.trainer.states import TrainerFn

from prefixlab.config import TrainerConfig
from prefixlab.run.artifacts import atomic_write
from prefixlab.run.progress import progress_callbacks

if TYPE_CHECKING:
    from prefixlab.training.best_checkpoint import Monitoring


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file next to the target, then are renamed over it, so a run
    killed while saving keeps its previous ``last.ckpt`` whole. (Lightning's own save goes
    through fsspec, which stages the file in the system temp folder and copies it into place.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))


class LastCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` every N optimizer steps. It is written at the end of a training
    batch, before the validation of that step; Lightning then skips that validation on resume. With
    a best checkpoint (``training/best_checkpoint.py``) that validation updates checkpointed state
    (the best score, early stopping's count), so ``last.ckpt`` is written again after it, and also
    after a validation that wrote ``best.ckpt``: a resume then starts from the state after that
    validation, and ``last.ckpt`` is never older than ``best.ckpt`` (so a stop signal or the end
    of training, which skip a step already saved, leave a ``last.ckpt`` at that step)."""

    def __init__(self, best: ModelCheckpoint | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.best = best

    @property
    def state_key(self) -> str:
        # the key the plain ModelCheckpoint had: checkpoints written before this class still restore its state
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)  # skips a step already saved
        if (self.best is None or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking
                or trainer.fast_dev_run):
            return
        # ModelCheckpoints run after the other callbacks (early stopping) and in list order: best, then this
        if trainer.global_step > 0 and trainer.global_step in (self._last_global_step_saved, self.best._last_global_step_saved):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _batch_limit(limit: int | float) -> int | float | None:
    """None for "all batches" (1.0): Lightning prints an info line for every limit passed explicitly
    as 1.0, so a run that never asked for a limit stays quiet."""
    return None if isinstance(limit, float) and limit == 1.0 else limit


def build_trainer(config: TrainerConfig, logger, run_dir: Path, callbacks: Sequence[pl.Callback] = (),
                  monitoring: "Monitoring | None" = None) -> pl.Trainer:
    """``monitoring`` (``training/best_checkpoint.Monitoring``): early stopping and ``best.ckpt``, if asked for."""
    watching = monitoring.callbacks(run_dir / "checkpoints") if monitoring is not None else []
    checkpoint = LastCheckpoint(
        best=next((c for c in watching if isinstance(c, ModelCheckpoint)), None),
        dirpath=str(run_dir / "checkpoints"),
        save_last=not config.fast_dev_run,  # Lightning's on_train_end saves last.ckpt even in a smoke test
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
        # Lightning's smoke test (loggers and checkpoints off) and batch limits: cli/train.py marks such a run's results
        fast_dev_run=config.fast_dev_run,
        limit_val_batches=_batch_limit(config.limit_val_batches),
        limit_test_batches=_batch_limit(config.limit_test_batches),
        logger=logger,
        # best.ckpt's callback before last.ckpt's: LastCheckpoint.on_validation_end reads what it saved
        callbacks=[*watching, checkpoint, LearningRateMonitor(logging_interval="step"),
                   *progress_callbacks(config.enable_progress_bar), *callbacks],
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
