"""What every prefixlab LightningModule does the same way: a frozen pretrained backbone (an LM,
or an encoder with its task head) plus a small trainable part.

``FrozenBackboneModule`` holds, once for the LM path (``lm_module.PrefixTuningModule``) and the
encoder path (``encoder_module.EncoderTaskModule``):
* the optimizer (AdamW over trainable parameters) and its warm-up schedule;
* the validation/test hooks and the gathering of every rank's evaluation rows;
* the backbone kept in eval mode (no dropout: the same function in training and evaluation);
* the NaN guard of a training step;
* the state: ``state_dict`` keeps the trainable parameters and everything outside the backbone
  (the prefix encoder), never frozen backbone weights, so checkpoints stay small and
  ``resume.check_trainable_state`` compares exactly what a checkpoint holds;
* the parameter counts and the prefix export.

A subclass sets ``self.prefixed`` (a ``PrefixedModel``: its model is the ``backbone``; with
``geometry`` and ``prefix_encoder``) and ``self.is_prefix_method``, keeps ``hparams.optim`` (lr,
weight_decay, betas, warmup_steps), ``hparams.max_steps``, ``hparams.model``, ``hparams.method`` and
``hparams.task_name``, and provides ``compute_loss(batch)``, ``_eval_step(stage, batch)``,
``_eval_epoch_end(stage)``, ``_is_added_to_backbone(name)`` (a trainable tensor a method put
inside the backbone: adapters, a task head) and ``_exported_count(trainable)``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from transformers import get_linear_schedule_with_warmup

from prefixlab.engine.export import ExportedPrefix, export_activations
from prefixlab.engine.geometry import PrefixGeometry
from prefixlab.training.checkpointing import enable_checkpointing


def freeze_for_training(backbone: torch.nn.Module, gradient_checkpointing: bool) -> torch.nn.Module:
    """Eval mode (no dropout in the frozen model), with gradient checkpointing if asked: its
    layers then checkpoint in eval mode too (``training/checkpointing.py``)."""
    backbone.eval()
    if gradient_checkpointing:
        enable_checkpointing(backbone)
    return backbone


def drop_frozen_weights(module: torch.nn.Module, state: dict, frozen_key: str, prefix: str = "") -> dict:
    """``state`` (``module``'s state_dict, its keys under ``prefix``) without the frozen weights of
    the submodule at ``frozen_key`` (its state-dict prefix, e.g. ``prefixed.lm.``): the keys there
    that are not trainable parameters. Shared by every module that holds a frozen backbone (this
    base, the packed sweeps' ``PackedPrefixModule``), so checkpoints never hold the frozen LM."""
    frozen_key = prefix + frozen_key
    trainable = {prefix + name for name, p in module.named_parameters() if p.requires_grad}
    for key in [k for k in state if k.startswith(frozen_key) and k not in trainable]:
        del state[key]  # in place: a parent module's state_dict passes its own dict as destination
    return state


class FrozenBackboneModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.strict_loading = False  # checkpoints hold no frozen backbone weights by design (state_dict)

    @property
    def backbone(self) -> torch.nn.Module:
        """The frozen model inside ``self.prefixed`` (a ``PrefixedModel``): the LM, or the encoder with its head."""
        return getattr(self.prefixed, self.prefixed.MODEL_ATTRIBUTE)

    def compute_loss(self, batch: dict) -> torch.Tensor:
        """The training loss of one batch (a scalar)."""
        raise NotImplementedError

    def _is_added_to_backbone(self, parameter_name: str) -> bool:
        """A parameter of the backbone (name relative to it) that the method added or trains: not a frozen weight."""
        raise NotImplementedError

    def _exported_count(self, trainable: int) -> int:
        """How many numbers the export holds."""
        raise NotImplementedError

    # ---- frozen backbone --------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # Lightning flips everything to train(); the backbone stays in eval
        return self

    def _backbone_key(self) -> str:
        """The backbone's state-dict prefix (``prefixed.lm.`` or ``prefixed.model.``)."""
        return f"prefixed.{self.prefixed.MODEL_ATTRIBUTE}."

    def state_dict(self, *args, **kwargs):
        """Trainable parameters and all state outside the backbone: frozen weights are rebuilt
        from the model's name, never saved (Lightning saves this dict in checkpoints)."""
        return drop_frozen_weights(self, super().state_dict(*args, **kwargs), self._backbone_key(), kwargs.get("prefix", ""))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.global_step}; lower optim.lr")
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    # ---- optimizer ------------------------------------------------------------------------
    def configure_optimizers(self):
        """AdamW over the trainable parameters only (the prefix, the adapters, the head...) and a
        linear schedule with warm-up, stepped every optimizer step."""
        optim = self.hparams.optim
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=optim["lr"], weight_decay=optim["weight_decay"], betas=tuple(optim["betas"]))
        scheduler = get_linear_schedule_with_warmup(optimizer, optim["warmup_steps"], self.hparams.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- evaluation -----------------------------------------------------------------------
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

    # ---- accounting and export --------------------------------------------------------------
    def parameter_counts(self) -> dict[str, Any]:
        """lm_params: the frozen backbone (without what the method added to it); exported_params:
        what the export holds; percentages of lm_params. Subclasses may add keys."""
        lm_params = sum(p.numel() for n, p in self.backbone.named_parameters() if not self._is_added_to_backbone(n))
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen_key = self._backbone_key()
        rest = sum(p.numel() for n, p in self.named_parameters()
                   if not n.startswith(frozen_key) or self._is_added_to_backbone(n[len(frozen_key):]))
        exported = self._exported_count(trainable)
        return {
            "lm_params": lm_params,
            "trainable_params": trainable,
            "total_params": lm_params + rest,
            "exported_params": exported,
            "trainable_percent_of_lm": 100.0 * trainable / lm_params,
            "exported_percent_of_lm": 100.0 * exported / lm_params,
        }

    def _prefix_count(self) -> int:
        """Numbers in the exported prefix (keys and values of every site); 0 without a prefix."""
        if not self.is_prefix_method:
            return 0
        return sum(p.keys.numel() + p.values.numel() for p in self.prefixed.prefix_encoder().sites.values())

    @torch.no_grad()
    def _exported_prefix(self, metadata: dict[str, str]) -> ExportedPrefix:
        """The prefix as ``engine/export.save_prefix`` writes it, tagged with ``metadata``."""
        activations = export_activations(self.prefixed.prefix_encoder)
        geometry = self.prefixed.geometry
        return ExportedPrefix(
            activations=activations,
            geometry=PrefixGeometry(geometry.model_type, {n: geometry.sites[n] for n in activations.sites}),
            base_model=self.hparams.model["name_or_path"],
            prefix_length=self.hparams.method["prefix_length"],
            method=self.hparams.method["name"],
            metadata=metadata,
        )
