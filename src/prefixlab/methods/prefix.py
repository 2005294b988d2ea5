"""The prefix methods: prefix, prefix_flat, infix, embedding.

Each trains a small prefix encoder against the frozen model and exports its activations
(``engine/export.py``). ``prefix`` and ``prefix_flat`` also run on encoders (a P-tuning v2
prefix next to the task head, ``training/encoder_module.py``); ``infix`` and ``embedding``
are decoder-only. A new prefix variant is a builder here (or in its own module) and one
``register_method(MethodSpec(..., is_prefix=True, build_prefix=..., export=export_prefix,
export_format="prefix"))``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from prefixlab.engine.geometry import PrefixGeometry
from prefixlab.engine.initialization import init_token_ids, initialize_from_activations, word_activations
from prefixlab.engine.parameterization import EmbeddingPrompt, FlatPrefix, MLPPrefix
from prefixlab.methods.registry import DECODER, ENCODER, ENCODER_DECODER, MethodSpec, register_method

# The method.* keys that decide a prefix's tensors (training/resume.py compares them).
PREFIX_KEYS = ("prefix_length", "prefix_sites")
MLP_KEYS = ("mid_dim", "mlp_layers")


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
    build_prefix=build_mlp_prefix, export=export_prefix, export_format="prefix",
))
PREFIX_FLAT = register_method(MethodSpec(
    name="prefix_flat", summary="trains the prefix activations themselves", models=ALL_MODELS,
    is_prefix=True, packable=True, checkpoint_keys=PREFIX_KEYS,
    build_prefix=build_flat_prefix, export=export_prefix, export_format="prefix",
))
INFIX = register_method(MethodSpec(
    name="infix", summary="trains activations that only the target sees (INFIX-k)", models=frozenset({DECODER}),
    is_prefix=True, uses_mlp=True, target_only=True, packable=True, checkpoint_keys=PREFIX_KEYS + MLP_KEYS,
    build_prefix=build_mlp_prefix, export=export_prefix, export_format="prefix",
))
EMBEDDING = register_method(MethodSpec(
    name="embedding", summary="trains k input embeddings (EMB-k, prompt tuning)", models=frozenset({DECODER}),
    is_prefix=True, packable=True, checkpoint_keys=("prefix_length",),
    build_prefix=build_embedding_prompt, export=export_prefix, export_format="prefix",
))
