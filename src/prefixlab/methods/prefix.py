"""The prefix methods: prefix, prefix_flat, infix, embedding.

Each trains a small prefix encoder against the frozen model and exports its activations
(``engine/export.py``). ``prefix`` and ``prefix_flat`` also run on encoders (a P-tuning v2
prefix next to the task head, ``training/encoder_module.py``); ``infix`` and ``embedding``
are decoder-only. A new prefix variant is a builder here (or in its own module) and one
``register_method(MethodSpec(..., is_prefix=True, build_prefix=..., export=export_prefix,
export_format="prefix", options=PrefixOptions))`` (or its own ``MethodOptions`` subclass for other keys).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:  # the engine is torch: imported where a prefix is built, not with the schema (the CLI)
    from torch import nn

    from prefixlab.engine.geometry import PrefixGeometry
from prefixlab.methods.registry import (DECODER, ENCODER, ENCODER_DECODER, Check, MethodNotSupportedError, MethodOptions,
                                        MethodSpec, register_method)

# The method.* keys that decide a prefix's tensors (training/resume.py compares them).
PREFIX_KEYS = ("prefix_length", "prefix_sites")
MLP_KEYS = ("mid_dim", "mlp_layers")


@dataclass
class PrefixOptions(MethodOptions):
    """``method.*`` of the prefix family (prefix, prefix_flat, infix, embedding): ``conf/method/prefix*.yaml``."""

    schema_name = "prefix_schema"
    prefix_length: int = field(default=10, metadata={"help": "prefix / infix / prompt positions"})
    prefix_sites: Optional[list[str]] = field(default=None, metadata={"help": "attention sites with a prefix (None: all of the model's)"})
    mid_dim: Optional[int] = field(default=None, metadata={"help": "hidden width of the reparameterization MLP (prefix, infix; null for the others)"})
    mlp_layers: int = field(default=1, metadata={"help": "hidden Linear+Tanh layers of the MLP"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the prefix activations"})
    init_std: float = field(default=0.02, metadata={"help": "std of the random init of a flat prefix"})
    init: str = field(default="random", metadata={"help": "random | text (the LM's activations of init_text)"})
    init_text: str = field(default="", metadata={"help": "words for init=text, e.g. 'summarize' or 'table-to-text:'"})
    # init_fill / init_fit default to what prefixlab did before they existed (LEGACY_INIT: a config without
    # them means that); conf/method/*.yaml set the original code's phrase_length and mse
    init_fill: str = field(default="repeat", metadata={"help": "init=text: phrase_length (the original: ' ' + init_text once; prefix_length must be its token count) | repeat (init_text without the space, repeated or cut to prefix_length)"})
    init_fit: str = field(default="exact", metadata={"help": "init=text with an MLP: mse (the original: Adam on the MSE to the words' activations for init_fit_steps at init_fit_lr, before training) | exact (its last Linear solved by least squares)"})
    init_fit_steps: int = field(default=500, metadata={"help": "Adam steps of init_fit=mse"})
    init_fit_lr: float = field(default=1.0e-4, metadata={"help": "Adam learning rate of init_fit=mse"})

    def checks(self, spec: MethodSpec) -> list[Check]:
        mlp = ((self.mid_dim is not None and self.mid_dim > 0, "mid_dim", self.mid_dim,
                f"must be >= 1 for method {spec.name} (its MLP's width)") if spec.uses_mlp else
               (self.mid_dim is None or self.mid_dim > 0, "mid_dim", self.mid_dim,
                f"must be >= 1 (the MLP's width) or null (method {spec.name} without the MLP)") if spec.mlp_optional else
               (self.mid_dim is None, "mid_dim", self.mid_dim,
                f"must be null: method {spec.name} has no reparameterization MLP (use method=prefix for one)"))
        return [
            (self.prefix_length > 0, "prefix_length", self.prefix_length, "must be >= 1"),
            mlp,
            (self.prefix_sites is None or len(self.prefix_sites) > 0, "prefix_sites", self.prefix_sites,
             "null (all sites) or a non-empty list of decoder_self, encoder_self, cross"),
            (self.mlp_layers >= 1, "mlp_layers", self.mlp_layers, "must be >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)"),
            (self.init in ("random", "text"), "init", self.init, "random | text"),
            (self.init != "text" or bool(self.init_text.strip()), "init_text", self.init_text,
             "must hold some words when method.init=text"),
            (self.init_std > 0 and math.isfinite(self.init_std), "init_std", self.init_std, "must be > 0"),
            (self.init_fill in INIT_FILLS, "init_fill", self.init_fill, " | ".join(INIT_FILLS)),
            (self.init_fit in INIT_FITS, "init_fit", self.init_fit, " | ".join(INIT_FITS)),
            (self.init_fit_steps >= 0, "init_fit_steps", self.init_fit_steps, "must be >= 0"),
            (self.init_fit_lr > 0 and math.isfinite(self.init_fit_lr), "init_fit_lr", self.init_fit_lr, "must be > 0"),
        ]


# engine.initialization.FILLS / FITS, written out: the engine imports torch, this schema must not
INIT_FILLS = ("phrase_length", "repeat")
INIT_FITS = ("mse", "exact")
# A method dict without these keys comes from a config written before they existed (a checkpoint's
# hparams, a hand-built dict): it was initialized the way prefixlab did then, so read it that way.
LEGACY_INIT = {"init_fill": "repeat", "init_fit": "exact", "init_fit_steps": 500, "init_fit_lr": 1.0e-4}


class PhraseLengthMismatch(MethodNotSupportedError):
    """method.init_fill=phrase_length with a prefix_length other than the phrase's token count."""


def _init(method: Mapping[str, Any], key: str):
    return method.get(key, LEGACY_INIT[key])


def sites_for(geometry: PrefixGeometry, prefix_sites: list[str] | None) -> PrefixGeometry:
    return geometry if not prefix_sites else geometry.restricted_to(list(prefix_sites))


def text_init_ids(method: Mapping[str, Any], tokenizer) -> list[int] | None:
    """``method.init=text``: the token ids of ``init_text`` laid out as ``init_fill`` says (prefix_length
    of them); else None."""
    if method.get("init") != "text":
        return None
    from prefixlab.engine.initialization import PhraseLengthError, init_token_ids

    try:
        return init_token_ids(tokenizer, method["init_text"], method["prefix_length"], fill=_init(method, "init_fill"))
    except PhraseLengthError as error:
        raise PhraseLengthMismatch(str(error)) from None


def _fit(method: Mapping[str, Any]) -> dict[str, Any]:
    return {"fit": _init(method, "init_fit"), "steps": _init(method, "init_fit_steps"), "lr": _init(method, "init_fit_lr")}


def initialized(encoder: nn.Module, init_ids: list[int] | None, lm: nn.Module, method: Mapping[str, Any]) -> nn.Module:
    """``encoder`` started from the LM's activations of ``init_ids`` (text init), if any, fitted as
    ``method.init_fit`` says."""
    if init_ids is not None:
        from prefixlab.engine.initialization import initialize_from_activations, word_activations

        initialize_from_activations(encoder, word_activations(lm, init_ids), **_fit(method))
    return encoder


def build_mlp_prefix(method: Mapping[str, Any], geometry: PrefixGeometry, lm: nn.Module, tokenizer) -> nn.Module:
    """The paper's reparameterization: an MLP over a small table gives every site's activations."""
    from prefixlab.engine.parameterization import MLPPrefix

    init_ids = text_init_ids(method, tokenizer)
    encoder = MLPPrefix(
        sites_for(geometry, method.get("prefix_sites")), method["prefix_length"],
        embed_dim=lm.get_input_embeddings().embedding_dim, mid_dim=method["mid_dim"],
        mlp_layers=method["mlp_layers"], dropout=method["dropout"],
    )
    return initialized(encoder, init_ids, lm, method)


def build_flat_prefix(method: Mapping[str, Any], geometry: PrefixGeometry, lm: nn.Module, tokenizer) -> nn.Module:
    """The activations themselves are the parameters (random normal, std ``init_std``)."""
    from prefixlab.engine.parameterization import FlatPrefix

    init_ids = text_init_ids(method, tokenizer)
    encoder = FlatPrefix(sites_for(geometry, method.get("prefix_sites")), method["prefix_length"],
                         init_std=method["init_std"])
    return initialized(encoder, init_ids, lm, method)


def build_embedding_prompt(method: Mapping[str, Any], geometry: PrefixGeometry, lm: nn.Module, tokenizer) -> nn.Module:
    """EMB-k: k trainable input embeddings (prompt tuning); every site follows from them. With
    ``method.mid_dim`` (the original code's default) they are an MLP's output over a k-row table;
    ``method.mid_dim=null``: the embeddings themselves train. Text init: the table starts as the
    words' embeddings and the MLP is fitted (``init_fit``) to output them."""
    from prefixlab.engine.initialization import fit_mlp_output
    from prefixlab.engine.parameterization import EmbeddingPrompt

    init_ids = text_init_ids(method, tokenizer)
    prompt = EmbeddingPrompt(lm, method["prefix_length"], init_token_ids=init_ids, mid_dim=method.get("mid_dim"),
                             mlp_layers=method.get("mlp_layers", 1))
    if init_ids is not None and prompt.mlp is not None:
        fit_mlp_output(prompt.mlp, prompt.embeddings, prompt.embeddings, **_fit(method))
    return prompt


def export_prefix(module, directory: Path) -> Path:
    """The prefix activations (no MLP): ``prefix.safetensors`` + ``prefix_config.json``."""
    from prefixlab.engine.export import save_prefix

    return save_prefix(directory, module.exported_prefix())


ALL_MODELS = frozenset({DECODER, ENCODER_DECODER, ENCODER})

PREFIX = register_method(MethodSpec(
    name="prefix", summary="trains a prefix through the reparameterization MLP (Li & Liang)", models=ALL_MODELS,
    is_prefix=True, uses_mlp=True, packable=True, checkpoint_keys=PREFIX_KEYS + MLP_KEYS,
    build_prefix=build_mlp_prefix, export=export_prefix, export_format="prefix", options=PrefixOptions,
))
PREFIX_FLAT = register_method(MethodSpec(
    name="prefix_flat", summary="trains the prefix activations themselves", models=ALL_MODELS,
    is_prefix=True, packable=True, checkpoint_keys=PREFIX_KEYS,
    build_prefix=build_flat_prefix, export=export_prefix, export_format="prefix", options=PrefixOptions,
))
INFIX = register_method(MethodSpec(
    name="infix", summary="trains activations that only the target sees (INFIX-k)", models=frozenset({DECODER}),
    is_prefix=True, uses_mlp=True, target_only=True, packable=True, checkpoint_keys=PREFIX_KEYS + MLP_KEYS,
    build_prefix=build_mlp_prefix, export=export_prefix, export_format="prefix", options=PrefixOptions,
))
EMBEDDING = register_method(MethodSpec(
    name="embedding", summary="trains k input embeddings (EMB-k, prompt tuning; through an MLP with method.mid_dim)",
    models=frozenset({DECODER}), is_prefix=True, mlp_optional=True, packable=True, checkpoint_keys=("prefix_length",) + MLP_KEYS,
    build_prefix=build_embedding_prompt, export=export_prefix, export_format="prefix", options=PrefixOptions,
))
