"""What a run shows while it works: one training bar counted in optimizer steps, evaluation bars,
and none of Lightning's known noise.

A prefixlab run is bounded by ``trainer.max_steps`` (``max_epochs=-1``), so Lightning's own bar,
which counts batches per epoch, read "Epoch 0/-2" and restarted every epoch without an end in
sight. ``StepProgressBar`` keeps one bar for the whole fit::

    step 12/80 |████▌          | [00:09<00:51, 1.33it/s, train/loss=3.41]

(resumed runs start at their checkpoint's step; the ETA counts only this session's steps). The
validation and test bars are Lightning's (batches of the split, with an ETA), named after what they
do: each batch generates text. ``progress_callbacks`` is what ``run/trainer.build_trainer`` adds.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

TRAIN_BAR_FORMAT = "step {n_fmt}/{total_fmt} |{bar}| [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, its training bar counting optimizer steps up to ``max_steps``."""

    def _generating(self) -> str:
        # an LM's evaluation batch generates text (most of its time); an encoder's only classifies
        module = self._trainer.lightning_module if self._trainer is not None else None
        return " (generating)" if hasattr(module, "generate_text") else ""

    @property
    def validation_description(self) -> str:
        return "validation" + self._generating()

    @property
    def test_description(self) -> str:
        return "test" + self._generating()

    def init_train_tqdm(self) -> Tqdm:
        trainer = self.trainer
        return Tqdm(
            total=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None,
            initial=trainer.global_step,  # a resumed run starts where its checkpoint stopped
            position=2 * self.process_position, disable=self.is_disabled, leave=True, dynamic_ncols=True,
            file=sys.stdout, smoothing=0, bar_format=TRAIN_BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        """Nothing: the epoch is no unit of a step-bounded run, and Lightning's reset here would
        restart the bar at 0 with the epoch's batch count."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        step = trainer.global_step  # optimizer steps: with gradient accumulation, one per k batches
        if step != bar.n and self._should_update(step, bar.total):
            bar.update(step - bar.n)  # update, not n=: tqdm's rate and ETA follow update()
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.train_progress_bar is not None and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


def quiet_known_noise() -> None:
    """Silence three Lightning messages that say nothing about a prefixlab run:
    * "Found N module(s) in eval mode at the start of training": the frozen backbone is kept in
      eval mode on purpose (no dropout in the frozen model: ``training/frozen_backbone.py``);
    * the "💡 Tip: ... litlogger" advertisement printed when a Trainer is built;
    * "`isinstance(treespec, LeafSpec)` is deprecated": Lightning's own use of a torch API, once per run.
    Called for every Trainer: a warnings filter that is already there is moved, not repeated, and
    someone's ``warnings.catch_warnings`` (pytest's, for one) may have dropped it since the last call."""
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    lightning_log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in lightning_log.filters):
        lightning_log.addFilter(_DropMessages("litlogger"))


def progress_callbacks(enable_progress_bar: bool) -> list:
    """The callbacks ``build_trainer`` adds for progress (Lightning refuses a progress bar callback
    when ``enable_progress_bar`` is false), quieting the known noise first."""
    quiet_known_noise()
    return [StepProgressBar()] if enable_progress_bar else []
