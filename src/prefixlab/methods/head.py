"""``head``: encoders only, the task head (classifier / span start-end) on the frozen encoder,
no prefix: the encoder counterpart of the zero-shot baseline. ``training/encoder_module.py``
trains and exports the head (it does so for every encoder method)."""

from __future__ import annotations

from prefixlab.methods.registry import ENCODER, MethodSpec, register_method

HEAD = register_method(MethodSpec(
    name="head", summary="trains a task head on a frozen encoder", models=frozenset({ENCODER}),
    export_format="head",
))
