"""Activation (gradient) checkpointing for a frozen LM that stays in eval mode.

transformers checkpoints a layer (``GradientCheckpointingLayer``) only while the layer is in
train mode, and its models drop the KV cache for it only in train mode. Train mode also
switches on the LM's dropout (``nn.Dropout`` modules and the ``dropout(..., training=self.training)``
calls inside BART's and T5's layers) and BART's layerdrop, so a frozen LM put in train mode
for checkpointing computed a different, random function at every training step.

``enable_checkpointing`` keeps the LM in eval mode (no dropout anywhere) and gives each
checkpointed layer a ``forward`` that runs the layer under its checkpoint function whenever
gradients are being recorded: activations are recomputed in backward as before, now with
the same deterministic function the LM computes in evaluation. Without gradients (evaluation,
``generate``) and in train mode the layer runs transformers' own forward unchanged.
"""

from __future__ import annotations

import warnings
from functools import partial

import torch
from torch import nn

# the names transformers' layers give their cache argument (see GradientCheckpointingLayer)
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


class EvalModeCheckpoint:
    """A checkpointed layer's ``forward`` (an instance attribute; a class so that the layer
    still deep-copies and pickles). It calls ``layer._gradient_checkpointing_func``, which
    prefixlab's injector wraps to replay the active prefix in the recomputation."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer

    def __call__(self, *args, **kwargs):
        layer = self.layer
        forward = type(layer).forward  # in eval mode transformers' wrapper runs the plain forward
        if layer.training or not (layer.gradient_checkpointing and torch.is_grad_enabled()):
            return forward(layer, *args, **kwargs)
        # What transformers does before checkpointing in train mode: a cache would be written twice,
        # in the forward and in the recomputation. (In train mode the model itself drops a cache it
        # passes positionally, as GPT-2 does; in eval mode it is dropped here.)
        if kwargs.get("use_cache"):
            kwargs["use_cache"] = False
        if not getattr(layer, "_can_checkpoint_with_cache", False):
            from transformers.cache_utils import Cache

            kwargs.update({name: None for name in _CACHE_KWARGS if kwargs.get(name) is not None})
            args = tuple(None if isinstance(a, Cache) else a for a in args)
        return layer._gradient_checkpointing_func(partial(forward, layer, **kwargs), *args)


def checkpointed_layers(lm: nn.Module) -> list[nn.Module]:
    """The layers of ``lm`` that checkpoint in eval mode (``enable_checkpointing`` ran on them)."""
    return [m for m in lm.modules() if isinstance(m.__dict__.get("forward"), EvalModeCheckpoint)]


def enable_checkpointing(lm: nn.Module) -> nn.Module:
    """Turn on activation checkpointing (non-reentrant) for ``lm`` kept in eval mode; returns ``lm``."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.x; gradient_checkpointing_enable is its alias
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    layers = [m for m in lm.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    for layer in layers:
        if not isinstance(layer.__dict__.get("forward"), EvalModeCheckpoint):
            layer.forward = EvalModeCheckpoint(layer)
    if not layers:
        warnings.warn(
            f"model.gradient_checkpointing: {type(lm).__name__} has no transformers GradientCheckpointingLayer; "
            "its layers checkpoint only in train mode, which the frozen LM never enters (no dropout): "
            "training runs without checkpointing",
            stacklevel=2,
        )
    return lm
