"""What the two LightningModules (``module.PrefixTuningModule`` for LMs and
``encoder_module.EncoderTaskModule`` for encoders) do the same way: the optimizer and its
schedule, the validation/test hooks, and gathering every rank's evaluation rows.

A mixin, listed before ``pl.LightningModule`` so that its hooks replace Lightning's empty ones.
A module using it provides ``_eval_step(stage, batch)`` and ``_eval_epoch_end(stage)`` and keeps
``hparams.optim`` (lr, weight_decay, betas, warmup_steps) and ``hparams.max_steps``.
"""

from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup


class TrainEvalHooks:
    def configure_optimizers(self):
        """AdamW over the trainable parameters only (the prefix, the adapters, the head...) and a
        linear schedule with warm-up, stepped every optimizer step."""
        optim = self.hparams.optim
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=optim["lr"], weight_decay=optim["weight_decay"], betas=tuple(optim["betas"]))
        scheduler = get_linear_schedule_with_warmup(optimizer, optim["warmup_steps"], self.hparams.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _all_ranks(self, stage: str, rows: list[dict]) -> list[dict]:
        """Every rank's rows, each example once and in dataset order, on every rank.

        With several processes Lightning's DistributedSampler gives rank r the examples
        r, r + W, r + 2W, ... of the split (W ranks; the last ones repeated from the start so
        that every rank gets as many), so interleaving the ranks' lists and cutting at the split
        size undoes it. Every rank then scores the same full set: the logged metrics agree
        without a reduction, and rank 0 writes all rows to predictions.jsonl.
        """
        world = self._trainer.world_size if self._trainer is not None else 1
        if world == 1:
            return rows
        gathered: list[list[dict]] = [[] for _ in range(world)]
        torch.distributed.all_gather_object(gathered, rows)
        loader = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        return [row for group in zip(*gathered) for row in group][: len(loader.dataset)]
