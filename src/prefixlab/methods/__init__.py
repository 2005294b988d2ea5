"""The paper's methods and baselines as switches on one pipeline (``method.name``).

| name           | what trains                                        | what is exported                |
|----------------|----------------------------------------------------|---------------------------------|
| prefix         | MLP reparameterization of the prefix (Li & Liang)  | prefix activations (no MLP)     |
| prefix_flat    | the prefix activations themselves                  | prefix activations              |
| infix          | as prefix, but only the target sees it (INFIX-k)   | activations + placement         |
| embedding      | k input embeddings (EMB-k, prompt tuning)          | their activations               |
| finetune       | every LM weight                                    | the trained weights             |
| finetune_topk  | the top k layers and the final norm (FT-top k)     | the trained weights             |
| lora, ia3      | PEFT's LoRA / (IA)^3 adapters, injected in place   | PEFT adapter folder             |
| adapter        | bottleneck adapters after each FFN (Houlsby/Lin)   | adapter weights + JSON          |
| head           | encoders only: the task head, no prefix (baseline) | the head                        |

On an encoder (BERT family) prefix and prefix_flat train a P-tuning v2 prefix plus the task
head (``encoder_module.py``); ``head`` trains the head alone.

Plain torch and PEFT; the LightningModule calls ``prepare``.
"""

from __future__ import annotations

from torch import nn

from prefixlab.engine.geometry import PrefixGeometry
from prefixlab.engine.initialization import init_token_ids, initialize_from_activations, word_activations
from prefixlab.engine.parameterization import EmbeddingPrompt, FlatPrefix, MLPPrefix

PREFIX_METHODS = ("prefix", "prefix_flat", "infix", "embedding")
MLP_METHODS = ("prefix", "infix")
WEIGHT_METHODS = ("finetune", "finetune_topk")
PEFT_METHODS = ("lora", "ia3")
ADAPTER_METHODS = ("adapter",)  # engine/bottleneck_adapters.py
ENCODER_METHODS = ("prefix", "prefix_flat", "head")  # each with the task head on the frozen encoder
METHODS = PREFIX_METHODS + WEIGHT_METHODS + PEFT_METHODS + ADAPTER_METHODS + ("head",)
DECODER_ONLY_METHODS = ("infix", "embedding", "adapter")


class MethodNotSupportedError(ValueError):
    """The chosen method cannot be applied to the chosen model."""


def check_method_fits_model(method: dict, config) -> None:
    """Before any weights load: is this method defined for this architecture?"""
    from prefixlab.engine.families import adapter_for_model_type

    name = method["name"]
    # Every method runs through a prefixed wrapper (it attaches the engine), so every method
    # needs the family's adapter; UnsupportedModelError names the supported model types.
    adapter = adapter_for_model_type(config.model_type)
    if adapter.is_encoder_only:
        if name not in ENCODER_METHODS or method.get("init") == "text":
            what = f"method={name}" if name not in ENCODER_METHODS else "method.init=text"
            raise MethodNotSupportedError(
                f"{what} does not apply to model type {config.model_type!r}, an encoder: use method=prefix, "
                "prefix_flat (P-tuning v2 prefix + task head) or head (the task head alone)"
            )
        unknown = sorted(set(method.get("prefix_sites") or []) - {"encoder_self"})
        if unknown and name != "head":
            raise MethodNotSupportedError(
                f"method.prefix_sites={list(method['prefix_sites'])}: {unknown} do not exist in a {config.model_type!r} "
                "model; it has ['encoder_self']"
            )
        return
    if name == "head":
        raise MethodNotSupportedError(
            f"method=head trains a task head on a frozen encoder; {config.model_type!r} is not an encoder "
            "(use an encoder such as model=minilm, or a generative method)"
        )
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    if encoder_decoder and (name in DECODER_ONLY_METHODS or method.get("init") == "text"):
        what = f"method={name}" if name in DECODER_ONLY_METHODS else "method.init=text"
        raise MethodNotSupportedError(
            f"{what} is implemented for decoder-only models; {config.model_type!r} is an encoder-decoder. "
            "Use method=prefix or prefix_flat (with method.prefix_sites), finetune, finetune_topk, lora or ia3"
        )
    sites = method.get("prefix_sites")
    if sites and name in PREFIX_METHODS:
        allowed = {"decoder_self", "encoder_self", "cross"} if encoder_decoder else {"decoder_self"}
        unknown = sorted(set(sites) - allowed)
        if unknown:
            raise MethodNotSupportedError(
                f"method.prefix_sites={list(sites)}: {unknown} do not exist in a {config.model_type!r} model; it has {sorted(allowed)}"
            )


def sites_for(geometry: PrefixGeometry, prefix_sites: list[str] | None) -> PrefixGeometry:
    return geometry if not prefix_sites else geometry.restricted_to(list(prefix_sites))


def build_prefix_encoder(method: dict, geometry: PrefixGeometry, lm: nn.Module, tokenizer) -> nn.Module:
    """The trainable part of a prefix method, initialized as ``method.init`` says."""
    name, length = method["name"], method["prefix_length"]
    init_ids = init_token_ids(tokenizer, method["init_text"], length) if method.get("init") == "text" else None
    if name == "embedding":
        return EmbeddingPrompt(lm, length, init_token_ids=init_ids)
    geometry = sites_for(geometry, method.get("prefix_sites"))
    if name in MLP_METHODS:
        encoder = MLPPrefix(
            geometry, length, embed_dim=lm.get_input_embeddings().embedding_dim, mid_dim=method["mid_dim"],
            mlp_layers=method["mlp_layers"], dropout=method["dropout"],
        )
    else:
        encoder = FlatPrefix(geometry, length, init_std=method["init_std"])
    if init_ids is not None:
        initialize_from_activations(encoder, word_activations(lm, init_ids))
    return encoder


def _decoder_layers(lm: nn.Module) -> nn.ModuleList:
    """The layer stack that produces the output: an encoder-decoder's decoder."""
    base = lm.base_model
    if getattr(lm.config, "is_encoder_decoder", False):
        base = lm.get_decoder()
    for attribute in ("layers", "h", "block"):
        if hasattr(base, attribute):
            return getattr(base, attribute)
    raise ValueError(f"finetune_topk: cannot find the layer stack of a {lm.config.model_type} model")


def _final_norm(lm: nn.Module) -> nn.Module | None:
    base = lm.get_decoder() if getattr(lm.config, "is_encoder_decoder", False) else lm.base_model
    for attribute in ("norm", "ln_f", "final_layer_norm"):
        if hasattr(base, attribute):
            return getattr(base, attribute)
    return None


def unfreeze_for(method: dict, lm: nn.Module) -> None:
    """Set requires_grad on the LM for the weight-training methods (LM frozen otherwise)."""
    name = method["name"]
    lm.requires_grad_(name == "finetune")
    if name == "finetune_topk":
        layers = _decoder_layers(lm)
        k = method["k"]
        if not 1 <= k <= len(layers):
            raise ValueError(f"method.k={k} is out of range: the model has {len(layers)} layers")
        for layer in layers[len(layers) - k:]:
            layer.requires_grad_(True)
        norm = _final_norm(lm)
        if norm is not None:
            norm.requires_grad_(True)
        head = lm.get_output_embeddings()
        # A tied head is the input embedding table (SmolLM2, GPT-2): leave it frozen, as the
        # paper's FT-top2 tunes the top layers, not the vocabulary.
        if head is not None and head.weight is not lm.get_input_embeddings().weight:
            head.requires_grad_(True)
    if name in PEFT_METHODS:
        inject_peft_adapter(method, lm)
    if name in ADAPTER_METHODS:
        from prefixlab.engine.bottleneck_adapters import attach_adapters

        attach_adapters(lm, bottleneck=method["bottleneck"], placement=method["adapter_placement"],
                        init_std=method["init_std"], params_percent=method["adapter_params_percent"])


def peft_config(method: dict, lm: nn.Module):
    from peft import IA3Config, LoraConfig

    targets = list(method.get("target_modules") or []) or None
    task_type = "SEQ_2_SEQ_LM" if getattr(lm.config, "is_encoder_decoder", False) else "CAUSAL_LM"
    if method["name"] == "lora":
        return LoraConfig(
            task_type=task_type, r=method["lora_r"], lora_alpha=method["lora_alpha"],
            lora_dropout=method["dropout"], target_modules=targets,
        )
    return IA3Config(task_type=task_type, target_modules=targets, feedforward_modules=[] if targets else None)


def inject_peft_adapter(method: dict, lm: nn.Module) -> None:
    """LoRA / (IA)^3 injected into the LM's own modules (no PeftModel wrapper), so the
    same forward and generate paths serve them; only the adapter weights train."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(peft_config(method, lm), lm, adapter_name="default")
    for name, param in lm.named_parameters():
        param.requires_grad_("lora_" in name or "ia3_" in name)
