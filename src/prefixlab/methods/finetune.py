"""The weight-training baselines: finetune (every LM weight, the paper's FINE-TUNE) and
finetune_topk (the top k layers and the final norm, FT-top k). Both export the trained
weights (``trained_weights.safetensors`` + ``trained_config.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # torch only in type hints: the CLI imports this module for its schema
    from torch import nn

from prefixlab.methods.registry import GENERATIVE, Check, MethodOptions, MethodSpec, register_method


@dataclass
class TopLayersOptions(MethodOptions):
    """``method.*`` of finetune_topk (``finetune`` has no options of its own: ``MethodOptions``)."""

    schema_name = "finetune_topk_schema"
    k: int = field(default=2, metadata={"help": "number of top layers trained (2: the paper's FT-top2)"})
    # default false: a config without the key was written when prefixlab kept it frozen (conf/method/finetune_topk.yaml sets true)
    train_tied_embedding: bool = field(default=False, metadata={"help": "an output head tied to the input embedding trains too, as the original FT-top2 (GPT-2's wte; conf/method/finetune_topk.yaml); false: it stays frozen"})

    def checks(self, spec: MethodSpec) -> list[Check]:
        return [(self.k >= 1, "k", self.k, "must be >= 1")]


def unfreeze_all(method: Mapping[str, Any], lm: nn.Module) -> None:
    lm.requires_grad_(True)


def unfreeze_top_layers(method: Mapping[str, Any], lm: nn.Module) -> None:
    """The top ``method.k`` layers, the final norm and the output head train; a head tied to the input
    embedding (GPT-2, SmolLM2) only with ``method.train_tied_embedding``."""
    from prefixlab.engine.families import adapter_for  # torch: only when a run prepares its LM

    family = adapter_for(lm)  # where this family keeps the layer stack the head reads, and its final norm
    layers = family.layers(lm)
    k = method["k"]
    if not 1 <= k <= len(layers):
        raise ValueError(f"method.k={k} is out of range: the model has {len(layers)} layers")
    for layer in layers[len(layers) - k:]:
        layer.requires_grad_(True)
    norm = family.final_norm(lm)
    if norm is not None:
        norm.requires_grad_(True)
    head = lm.get_output_embeddings()
    # A tied head is the input embedding table (SmolLM2, GPT-2). The original FT-top2 trains it (GPT-2's
    # wte, so the input embeddings move too); train_tied_embedding=false keeps it frozen. A method dict
    # without the key predates it: it kept the table frozen.
    tied = head is not None and head.weight is lm.get_input_embeddings().weight
    if head is not None and (not tied or method.get("train_tied_embedding", False)):
        head.requires_grad_(True)


def export_trained_weights(module, directory: Path) -> Path:
    """Every LM parameter that trains: ``trained_weights.safetensors`` + ``trained_config.json``."""
    from safetensors.torch import save_file

    from prefixlab.run.artifacts import atomic_replace_dir

    lm = module.prefixed.lm
    trained = {n: p.detach().cpu().contiguous() for n, p in lm.named_parameters() if p.requires_grad}
    info = {"base_model": module.hparams.model["name_or_path"], "method": module.hparams.method, "parameters": len(trained)}

    def fill_weights(work: Path) -> None:
        save_file(trained, str(work / "trained_weights.safetensors"))
        (work / "trained_config.json").write_text(json.dumps(info, indent=2, default=str) + "\n")

    return atomic_replace_dir(directory, fill_weights)


FINETUNE = register_method(MethodSpec(
    name="finetune", summary="trains every LM weight", models=GENERATIVE,
    prepare_lm=unfreeze_all, export=export_trained_weights, export_format="weights",
))
FINETUNE_TOPK = register_method(MethodSpec(
    name="finetune_topk", summary="trains the top k layers and the final norm (FT-top k)", models=GENERATIVE,
    checkpoint_keys=("k",), prepare_lm=unfreeze_top_layers, export=export_trained_weights, export_format="weights",
    options=TopLayersOptions,
))
