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
from typing import Any, Mapping, Optional

from torch import nn

from prefixlab.engine.geometry import PrefixGeometry
from prefixlab.engine.initialization import init_token_ids, initialize_from_activations, word_activations
from prefixlab.engine.parameterization import EmbeddingPrompt, FlatPrefix, MLPPrefix
from prefixlab.methods.registry import DECODER, ENCODER, ENCODER_DECODER, Check, MethodOptions, MethodSpec, register_method

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

    def checks(self, spec: MethodSpec) -> list[Check]:
        mlp = ((self.mid_dim is not None and self.mid_dim > 0, "mid_dim", self.mid_dim,
                f"must be >= 1 for method {spec.name} (its MLP's width)") if spec.uses_mlp else
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
        ]


def sites_for(geometry: PrefixGeometry, prefix_sites: list[str] | None) -> PrefixGeometry:
    return geometry if not prefix_sites else geometry.restricted_to(list(prefix_sites))


def text_init_ids(method: Mapping[str, Any], tokenizer) -> list[int] | None:
    """``method.init=text``: the token ids of ``init_text`` (prefix_length of them); else None."""
    if method.get("init") != "text":
        return None
    return init_token_ids(tokenizer, method["init_text"], method["prefix_length"])


def initialized(encoder: nn.Module, init_ids: list[int] | None, lm: nn.Module) -> nn.Module:
    """``encoder`` started from the LM's activations of ``init_ids`` (text init), if any."""
    if init_ids is not None:
        initialize_from_activations(encoder, word_activations(lm, init_ids))
    return encoder


def build_mlp_prefix(method: Mapping[str, Any], geometry: PrefixGeometry, lm: nn.Module, tokenizer) -> nn.Module:
    """The paper's reparameterization: an MLP over a small table gives every site's activations."""
    init_ids = text_init_ids(method, tokenizer)
    encoder = MLPPrefix(
        sites_for(geometry, method.get("prefix_sites")), method["prefix_length"],
        embed_dim=lm.get_input_embeddings().embedding_dim, mid_dim=method["mid_dim"],
        mlp_layers=method["mlp_layers"], dropout=method["dropout"],
    )
    return initialized(encoder, init_ids, lm)


def build_flat_prefix(method: Mapping[str, Any], geometry: PrefixGeometry, lm: nn.Module, tokenizer) -> nn.Module:
    """The activations themselves are the parameters (random normal, std ``init_std``)."""
    init_ids = text_init_ids(method, tokenizer)
    encoder = FlatPrefix(sites_for(geometry, method.get("prefix_sites")), method["prefix_length"],
                         init_std=method["init_std"])
    return initialized(encoder, init_ids, lm)


def build_embedding_prompt(method: Mapping[str, Any], geometry: PrefixGeometry, lm: nn.Module, tokenizer) -> nn.Module:
    """EMB-k: k trainable input embeddings (prompt tuning); every site follows from them."""
    return EmbeddingPrompt(lm, method["prefix_length"], init_token_ids=text_init_ids(method, tokenizer))


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
    name="embedding", summary="trains k input embeddings (EMB-k, prompt tuning)", models=frozenset({DECODER}),
    is_prefix=True, packable=True, checkpoint_keys=("prefix_length",),
    build_prefix=build_embedding_prompt, export=export_prefix, export_format="prefix", options=PrefixOptions,
))
