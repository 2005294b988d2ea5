"""The final validation of a single run, without running it twice.

A run's ``metrics.json`` holds the validation metrics of the weights it exports. When ``fit``
already validated at its last step (``trainer.val_check_interval`` dividing ``max_steps``, as every
experiment config has it) and the last weights are the exported ones, a second
``trainer.validate`` would generate and score the same validation set with the same weights: the
same numbers (measured on a 150-step E2E run: identical, about 20 s of its 12 min). This callback
keeps what that last validation of ``fit`` logged, so ``train.train`` validates again only where
the weights differ (``export.checkpoint=best`` loaded another step's) or ``fit`` did not validate
at its last step (another interval, a resume with nothing left to train).
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

VALIDATION_PREFIX = "val/"


class LastFitValidation(pl.Callback):
    """Remembers the step and the ``val/*`` metrics of the last complete validation in ``fit``."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        # the epoch-end metrics of this validation are in callback_metrics by now (Lightning computes
        # them before the on_validation_end hooks); every validation logs the same val/* keys
        self.step = trainer.global_step
        self.metrics = {key: float(value) for key, value in trainer.callback_metrics.items()
                        if key.startswith(VALIDATION_PREFIX)}

    def metrics_at(self, step: int) -> dict[str, float] | None:
        """The metrics of the validation at ``step``, or None if ``fit``'s last validation was not there."""
        return dict(self.metrics) if self.step == step and self.metrics else None
