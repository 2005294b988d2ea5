"""The final validation of a single run, without running it twice.

A run's ``metrics.json`` holds the validation metrics of the weights it exports. Those weights are
the last step's or, with ``export.checkpoint=best``, the best validation's; either way ``fit``
usually validated them already: at its last step (``trainer.val_check_interval`` dividing
``max_steps``, as every experiment config has it) or at the best step (that validation is what made
it the best). A second ``trainer.validate`` would generate and score the same validation set with
the same weights: the same numbers (measured on a 150-step E2E run: identical, about 20 s of its
12 min). Worse, with the best weights it logs them at the *last* step, next to that step's own
validation, so a dashboard's curve ends on another step's numbers and the samples table of those
weights is skipped as "the same step". This callback keeps what every validation of ``fit`` logged,
by step, and keeps them in the run's checkpoints (a resumed run knows the validations before it),
so ``train.train`` validates again only where ``fit`` never validated the exported step (another
interval; a checkpoint written before this callback existed).
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

VALIDATION_PREFIX = "val/"


class FitValidations(pl.Callback):
    """Remembers the ``val/*`` metrics of each complete validation in ``fit``, by global step
    (a few floats each: a 150-step run with validation every 50 steps keeps three dicts)."""

    def __init__(self) -> None:
        self.by_step: dict[int, dict[str, float]] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        # the epoch-end metrics of this validation are in callback_metrics by now (Lightning computes
        # them before the on_validation_end hooks); every validation logs the same val/* keys
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith(VALIDATION_PREFIX)}
        if metrics:
            self.by_step[trainer.global_step] = metrics

    # in last.ckpt / best.ckpt (Lightning saves a callback's state_dict): a resume keeps the validations before it
    def state_dict(self) -> dict:
        return {"by_step": {step: dict(metrics) for step, metrics in self.by_step.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.by_step = {int(step): dict(metrics) for step, metrics in state_dict.get("by_step", {}).items()}

    def metrics_at(self, step: int) -> dict[str, float] | None:
        """The metrics of ``fit``'s validation at ``step``, or None if it did not validate there."""
        metrics = self.by_step.get(step)
        return dict(metrics) if metrics else None
