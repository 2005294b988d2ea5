"""Early stopping and the best checkpoint: Lightning's ``EarlyStopping`` and ``ModelCheckpoint``
watching the run's ``optimized_metric`` (a ``val/`` metric; which way is better comes from the one
table, ``tasks/scoring/directions.py``), and which weights a run exports.

Asked for with ``trainer.early_stopping.enabled=true`` or ``export.checkpoint=best``; both need
validation during training (``trainer.val_check_interval``), checked by ``monitoring_problem``
before any model loads. Then, at every periodic validation:

* ``BestCheckpoint`` writes ``checkpoints/best.ckpt`` (a training checkpoint like ``last.ckpt``:
  the trainable state, optimizer and loops, never the frozen LM; atomically, through the trainer's
  ``AtomicCheckpointIO``) when the metric is strictly better than at every earlier validation. A
  non-finite value is never better: Lightning would store a NaN as -inf/+inf, and the first one
  as the best. (A non-finite training loss stops the run before its step is validated:
  ``FrozenBackboneModule.training_step``.)
* ``EarlyStoppingAtStep`` (with early stopping on): Lightning's ``EarlyStopping``, which also
  remembers the step it stopped at, for ``metrics.json``.
* Resume: both callbacks' states are saved in ``last.ckpt`` and restored with it. ``last.ckpt`` is
  written again after a validation at a step it or ``best.ckpt`` was written at
  (``run/trainer.LastCheckpoint``), so it holds the state after that validation and is never older
  than ``best.ckpt``; a run that had stopped early stays stopped when resumed.

After ``fit``, ``Monitoring.choose_export`` loads the best weights into the module when
``export.checkpoint=best``, so the final ``trainer.validate``/``trainer.test`` and the export all
see the same weights.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from prefixlab.tasks.scoring.directions import lower_is_better

EXPORT_CHOICES = ("last", "best")
BEST_CHECKPOINT = Path("checkpoints") / "best.ckpt"


def monitoring_problem(cfg) -> str | None:
    """One line saying what is wrong with the early-stopping / best-export settings of ``cfg`` (a
    ``TrainConfig``, after ``optimized_metric`` itself was checked), or None. Only the config is read."""
    stopping, export, trainer = cfg.trainer.early_stopping, cfg.export.checkpoint, cfg.trainer
    if export not in EXPORT_CHOICES:
        return f"export.checkpoint={export!r} is out of range: last (the final step) | best (the best validation)"
    if stopping.patience < 1:
        return f"trainer.early_stopping.patience={stopping.patience!r} is out of range: must be >= 1 (validations without improvement)"
    if not (math.isfinite(stopping.min_delta) and stopping.min_delta >= 0):
        return f"trainer.early_stopping.min_delta={stopping.min_delta!r} is out of range: must be a finite number >= 0"
    asked = [key for key, on in (("trainer.early_stopping.enabled=true", stopping.enabled),
                                 ("export.checkpoint=best", export == "best")) if on]
    if not asked:
        return None
    what = " and ".join(asked)
    # Lightning counts an int val_check_interval in training batches (with max_epochs=-1: over epochs)
    batches = trainer.max_steps * trainer.accumulate_grad_batches
    if trainer.val_check_interval is None:
        return (f"{what} needs validation during training, and trainer.val_check_interval=null validates only after it: "
                f"set trainer.val_check_interval=N (validate every N training batches, N <= {batches})")
    if trainer.val_check_interval > batches:
        return (f"{what} needs validation during training, but trainer.val_check_interval={trainer.val_check_interval} "
                f"is beyond the run's {batches} training batches (trainer.max_steps x accumulate_grad_batches): "
                f"set it to at most {batches}")
    metric = cfg.optimized_metric
    stage, _, name = metric.partition("/")
    if stage != "val":
        return (f"{what} watches optimized_metric, which is {metric}: early stopping and the best checkpoint must "
                f"watch a validation metric, e.g. optimized_metric=val/{name}")
    from prefixlab.tasks import TASKS

    names = getattr(TASKS.get(cfg.task.name), "metric_names", None)
    if names and name not in ("loss", *names):
        return (f"optimized_metric={metric} is not a metric task={cfg.task.name} logs, so {what} would fail at the first "
                f"validation: choose val/ and one of {', '.join(('loss', *names))}")
    return None


class BestCheckpoint(ModelCheckpoint):
    """``checkpoints/best.ckpt``: the weights of the validation with the best monitored metric."""

    def __init__(self, dirpath: Path, monitor: str, mode: str) -> None:
        super().__init__(dirpath=str(dirpath), filename=BEST_CHECKPOINT.stem, monitor=monitor, mode=mode, save_top_k=1,
                         save_last=False, save_on_train_epoch_end=False, enable_version_counter=False,
                         auto_insert_metric_name=False)

    def check_monitor_top_k(self, trainer: pl.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is not None and not bool(torch.isfinite(current).all()):
            return False  # a NaN or inf is never the best (the same on every rank: the metrics are gathered)
        return super().check_monitor_top_k(trainer, current)


class EarlyStoppingAtStep(EarlyStopping):
    """Lightning's EarlyStopping, checked after each validation, that remembers the global step
    it stopped training at (in its checkpointed state, so a resumed stopped run stays stopped)."""

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float) -> None:
        super().__init__(monitor=monitor, mode=mode, patience=patience, min_delta=min_delta, check_finite=True,
                         check_on_train_epoch_end=False, strict=True, verbose=False)
        self.stopped_step: int | None = None

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        was_stopping = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        if trainer.should_stop and not was_stopping and self.stopped_step is None:
            self.stopped_step = trainer.global_step
            if trainer.is_global_zero:
                print(f"early stopping at step {trainer.global_step}: {self.stopping_reason_message}", flush=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopped_step is not None:  # restored from a checkpoint written after the stop
            trainer.should_stop = True
            rank_zero_only(print)(f"early stopping had stopped this run at step {self.stopped_step}: no more training")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stopped_step": self.stopped_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.stopped_step = state_dict.get("stopped_step")


@dataclass(frozen=True)
class Monitoring:
    """What a run watches at each periodic validation, and which weights it exports."""

    metric: str  # optimized_metric, val/<name>
    mode: str  # min | max, from tasks/scoring/directions.py
    export_best: bool
    early_stopping: bool
    patience: int
    min_delta: float

    @classmethod
    def of(cls, settings) -> "Monitoring | None":
        """From a validated ``TrainConfig``; None when neither early stopping nor the best export is asked for."""
        stopping = settings.trainer.early_stopping
        if not stopping.enabled and settings.export.checkpoint != "best":
            return None
        return cls(metric=settings.optimized_metric, mode="min" if lower_is_better(settings.optimized_metric) else "max",
                   export_best=settings.export.checkpoint == "best", early_stopping=stopping.enabled,
                   patience=stopping.patience, min_delta=stopping.min_delta)

    def describe(self, interval: int) -> str:
        """One line for the start of a run."""
        better = "lower" if self.mode == "min" else "higher"
        stopping = (f"; early stopping after {self.patience} validations without an improvement of more than {self.min_delta:g}"
                    if self.early_stopping else "")
        export = "the best validation's weights (checkpoints/best.ckpt)" if self.export_best else "the last step's weights"
        return f"watching {self.metric} ({better} is better) every {interval} training batches{stopping}; exporting {export}"

    def callbacks(self, checkpoint_dir: Path) -> list[pl.Callback]:
        best = BestCheckpoint(checkpoint_dir, self.metric, self.mode)
        if not self.early_stopping:
            return [best]
        return [EarlyStoppingAtStep(self.metric, self.mode, self.patience, self.min_delta), best]

    def choose_export(self, trainer: pl.Trainer, module: torch.nn.Module) -> dict[str, Any]:
        """After ``fit``: load the best weights into ``module`` if the best is exported; returns what
        metrics.json records (exported_checkpoint, exported_step, monitored_metric, best_val_metric,
        best_step, stopped_early_at_step and early_stopping_reason when it stopped)."""
        best = next(c for c in trainer.checkpoint_callbacks if isinstance(c, BestCheckpoint))
        record: dict[str, Any] = {"exported_checkpoint": "last", "exported_step": trainer.global_step,
                                  "monitored_metric": self.metric}
        path = Path(best.best_model_path) if best.best_model_path else None
        if best.best_model_score is not None and path is not None and path.is_file():
            step = load_best(module, path) if self.export_best else _checkpoint_step(path)
            record.update(best_val_metric=float(best.best_model_score), best_step=step)
            if self.export_best:
                record.update(exported_checkpoint="best", exported_step=step)
        elif self.export_best:  # no finite validation metric (or best.ckpt removed): say so, keep the last weights
            print(f"prefixlab-train: warning: export.checkpoint=best, but no validation gave a finite {self.metric} "
                  f"(no {best.dirpath}/best.ckpt): exporting and scoring the last step ({trainer.global_step})", file=sys.stderr)
        stopping = next((c for c in trainer.early_stopping_callbacks if isinstance(c, EarlyStoppingAtStep)), None)
        if stopping is not None and stopping.stopped_step is not None:
            record.update(stopped_early_at_step=stopping.stopped_step, early_stopping_reason=stopping.stopping_reason.name.lower())
        return record


def _checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


@torch.no_grad()
def load_best(module: torch.nn.Module, path: Path) -> int:
    """Put the trainable state of ``path`` (``best.ckpt``) into ``module``; returns its global step.
    It must hold exactly the module's checkpoint state (``FrozenBackboneModule.state_dict``: no
    frozen backbone weights), so nothing is left at its last-step value by mistake."""
    from prefixlab.training.resume import CheckpointError

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # a checkpoint is data
    state, expected = checkpoint["state_dict"], set(module.state_dict())
    if set(state) != expected:
        raise CheckpointError(f"best checkpoint {path} does not hold this module's trainable state "
                              f"(differing keys: {', '.join(sorted(set(state) ^ expected)[:3])})")
    module.load_state_dict(state, strict=False)  # strict=False: the frozen backbone is not in it, by design
    return int(checkpoint["global_step"])
