"""One small adapter per Hugging Face model family: where its layers, final norm and attention
modules are.

Everything else in the engine is family-agnostic: the prefix meets the attention in
``injection.py`` through transformers' attention interface, which every modern
model family calls with (query, key, value, mask). An adapter only has to say which
attention modules belong to which site, in layer order, and how big their key/value
heads are; and, for the methods that train or extend the LM's own layers (FT-top k, bottleneck
adapters), which stack of layers produces the output (``layers``) and which norm follows its
last layer (``final_norm``). This file is the only place that knows where a family keeps them.
Adding a family is adding one entry to ``FAMILY_ADAPTERS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from prefixlab.engine.geometry import AttentionSite, PrefixGeometry, SiteGeometry


class UnsupportedModelError(ValueError):
    """The base model's family has no prefix adapter."""


def _kv_geometry(
    modules: list[nn.Module], config, kv_shape: Callable[[nn.Module], tuple[int, int]] | None = None
) -> SiteGeometry:
    first = modules[0]
    if kv_shape is not None:
        num_kv_heads, head_dim = kv_shape(first)
        return SiteGeometry(num_layers=len(modules), num_kv_heads=int(num_kv_heads), head_dim=int(head_dim))
    head_dim = getattr(first, "head_dim", None) or getattr(config, "head_dim", None)
    if head_dim is None:
        head_dim = config.hidden_size // config.num_attention_heads
    num_kv_heads = getattr(config, "num_key_value_heads", None) or getattr(config, "num_attention_heads")
    return SiteGeometry(num_layers=len(modules), num_kv_heads=int(num_kv_heads), head_dim=int(head_dim))


@dataclass(frozen=True)
class FamilyAdapter:
    """How to find the attention modules of one family of architectures.

    ``attention_modules(model)`` returns, per site, the attention modules in layer order.
    ``layers(model)``: the stack of transformer layers whose output the model's head reads, in
    order (a decoder-only LM's layers, an encoder-decoder's decoder layers, an encoder's layers).
    ``final_norm(model)``: the norm applied to the last of those layers' output before the head,
    or None where the family has none (BART's decoder, the post-norm BERT family).
    ``shift_positions``: whether real tokens get positions that start after the prefix,
    as in the original prefix-tuning code and PEFT (GPT-2's absolute positions, RoPE).
    ``kv_shape(module)``: (num_kv_heads, head_dim) read off one attention module; needed where
    the config alone does not say it (T5's ``d_kv``, BART's encoder and decoder head counts).
    None: head_dim from the module or config, kv heads from ``num_key_value_heads`` or
    ``num_attention_heads``.
    """

    model_types: tuple[str, ...]
    attention_modules: Callable[[nn.Module], dict[AttentionSite, list[nn.Module]]]
    layers: Callable[[nn.Module], nn.ModuleList]
    final_norm: Callable[[nn.Module], nn.Module | None]
    is_encoder_decoder: bool = False
    is_encoder_only: bool = False  # BERT family: classification / extraction heads, no generation
    shift_positions: bool = True
    kv_shape: Callable[[nn.Module], tuple[int, int]] | None = None

    def geometry(self, model: nn.Module) -> PrefixGeometry:
        config = model.config
        sites = {
            site.value: _kv_geometry(modules, config, self.kv_shape)
            for site, modules in self.attention_modules(model).items()
        }
        return PrefixGeometry(model_type=config.model_type, sites=sites)


def _base_model(model: nn.Module) -> nn.Module:
    """The backbone under any head (``LlamaForCausalLM.model``, ``GPT2LMHeadModel.transformer``,
    ``BartForConditionalGeneration.model``, ``BertForQuestionAnswering.bert``); T5 is its own."""
    return getattr(model, "base_model", model)


# ---- decoder-only ----------------------------------------------------------------------------
def _llama_layers(model: nn.Module) -> nn.ModuleList:
    """Llama-style stacks: ``<base>.layers`` (Llama, Mistral, Qwen2/3, Gemma3 text, OLMo2, Phi-3)."""
    return _base_model(model).layers


def _llama_norm(model: nn.Module) -> nn.Module:
    return _base_model(model).norm


def _llama_like(model: nn.Module) -> dict[AttentionSite, list[nn.Module]]:
    """``<base>.layers[i].self_attn``."""
    return {AttentionSite.DECODER_SELF: [layer.self_attn for layer in _llama_layers(model)]}


def _gpt2_layers(model: nn.Module) -> nn.ModuleList:
    """GPT-2: ``<base>.h``; its final norm is ``<base>.ln_f``."""
    return _base_model(model).h


def _gpt2_norm(model: nn.Module) -> nn.Module:
    return _base_model(model).ln_f


def _gpt2(model: nn.Module) -> dict[AttentionSite, list[nn.Module]]:
    """``<base>.h[i].attn``."""
    return {AttentionSite.DECODER_SELF: [block.attn for block in _gpt2_layers(model)]}


# ---- encoder-decoders ------------------------------------------------------------------------
def _output_stack(model: nn.Module) -> nn.Module:
    """The stack whose output the head reads: the decoder (the encoder of an encoder-only
    ``T5EncoderModel``)."""
    base = _base_model(model)
    decoder = getattr(base, "decoder", None)
    return decoder if decoder is not None else base.encoder


def _bart_layers(model: nn.Module) -> nn.ModuleList:
    return _output_stack(model).layers


def _bart_norm(model: nn.Module) -> nn.Module | None:
    """mBART's decoder ends with ``layer_norm``; BART's has none (``layernorm_embedding``
    normalizes the embeddings, before the layers)."""
    return getattr(_output_stack(model), "layer_norm", None)


def _bart_like(model: nn.Module) -> dict[AttentionSite, list[nn.Module]]:
    """BART / mBART (transformers 5.x): ``model.model.{encoder,decoder}.layers[i]``.

    Encoder ``self_attn`` -> encoder_self; decoder ``self_attn`` -> decoder_self; decoder
    ``encoder_attn`` -> cross. Each is the module that calls the attention interface.
    """
    base = _base_model(model)
    sites: dict[AttentionSite, list[nn.Module]] = {}
    encoder, decoder = getattr(base, "encoder", None), getattr(base, "decoder", None)
    if encoder is not None:
        sites[AttentionSite.ENCODER_SELF] = [layer.self_attn for layer in encoder.layers]
    if decoder is not None:
        sites[AttentionSite.DECODER_SELF] = [layer.self_attn for layer in decoder.layers]
        sites[AttentionSite.CROSS] = [layer.encoder_attn for layer in decoder.layers]
    return sites


def _t5_layers(model: nn.Module) -> nn.ModuleList:
    return _output_stack(model).block


def _t5_norm(model: nn.Module) -> nn.Module:
    return _output_stack(model).final_layer_norm


def _t5_like(model: nn.Module) -> dict[AttentionSite, list[nn.Module]]:
    """T5 / mT5 (transformers 5.x): ``model.{encoder,decoder}.block[i].layer[...]``.

    Encoder ``layer[0].SelfAttention`` -> encoder_self; decoder ``layer[0].SelfAttention``
    -> decoder_self; decoder ``layer[1].EncDecAttention`` -> cross. (``T5EncoderModel`` has
    only the encoder site.) The relative position bias that block 0 computes and the later
    blocks reuse reaches the attention function as the ``position_bias`` kwarg; the
    injection pads it with zeros for the prefix slots.
    """
    base = _base_model(model)
    sites: dict[AttentionSite, list[nn.Module]] = {}
    encoder, decoder = getattr(base, "encoder", None), getattr(base, "decoder", None)
    if encoder is not None:
        sites[AttentionSite.ENCODER_SELF] = [block.layer[0].SelfAttention for block in encoder.block]
    if decoder is not None:
        sites[AttentionSite.DECODER_SELF] = [block.layer[0].SelfAttention for block in decoder.block]
        sites[AttentionSite.CROSS] = [block.layer[1].EncDecAttention for block in decoder.block]
    return sites


# ---- encoders --------------------------------------------------------------------------------
def _no_final_norm(model: nn.Module) -> None:
    """Post-norm encoders (BERT family, DistilBERT): every layer ends with its own LayerNorm."""
    return None


def _bert_layers(model: nn.Module) -> nn.ModuleList:
    return _base_model(model).encoder.layer


def _bert_like(model: nn.Module) -> dict[AttentionSite, list[nn.Module]]:
    """BERT / RoBERTa / XLM-R / ELECTRA: ``<base>.encoder.layer[i].attention.self``."""
    return {AttentionSite.ENCODER_SELF: [layer.attention.self for layer in _bert_layers(model)]}


def _distilbert_layers(model: nn.Module) -> nn.ModuleList:
    return _base_model(model).transformer.layer


def _distilbert(model: nn.Module) -> dict[AttentionSite, list[nn.Module]]:
    """DistilBERT: ``model.distilbert.transformer.layer[i].attention``."""
    return {AttentionSite.ENCODER_SELF: [layer.attention for layer in _distilbert_layers(model)]}


FAMILY_ADAPTERS: list[FamilyAdapter] = [
    FamilyAdapter(model_types=("gpt2",), attention_modules=_gpt2, layers=_gpt2_layers, final_norm=_gpt2_norm),
    FamilyAdapter(
        model_types=("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "olmo2", "phi3"),
        attention_modules=_llama_like,
        layers=_llama_layers,
        final_norm=_llama_norm,
    ),
    # Encoder-decoders (Li & Liang: one prefix per site). Positions stay as the model computes
    # them: the encoder and cross-attention have no offset to follow, and BART's learned /
    # T5's relative decoder positions are left alone too.
    FamilyAdapter(
        model_types=("bart", "mbart"),
        attention_modules=_bart_like,
        layers=_bart_layers,
        final_norm=_bart_norm,
        is_encoder_decoder=True,
        shift_positions=False,
        kv_shape=lambda m: (m.num_heads, m.head_dim),
    ),
    FamilyAdapter(
        model_types=("t5", "mt5"),
        attention_modules=_t5_like,
        layers=_t5_layers,
        final_norm=_t5_norm,
        is_encoder_decoder=True,
        shift_positions=False,
        kv_shape=lambda m: (m.n_heads, m.key_value_proj_dim),
    ),
    # Encoder-only (P-tuning v2): every layer's self-attention; absolute positions unchanged.
    FamilyAdapter(
        model_types=("bert", "roberta", "xlm-roberta", "electra"),
        attention_modules=_bert_like,
        layers=_bert_layers,
        final_norm=_no_final_norm,
        is_encoder_only=True,
        shift_positions=False,
        kv_shape=lambda m: (m.num_attention_heads, m.attention_head_size),
    ),
    FamilyAdapter(
        model_types=("distilbert",),
        attention_modules=_distilbert,
        layers=_distilbert_layers,
        final_norm=_no_final_norm,
        is_encoder_only=True,
        shift_positions=False,
        kv_shape=lambda m: (m.n_heads, m.attention_head_size),
    ),
]


def supported_model_types() -> list[str]:
    return sorted(t for adapter in FAMILY_ADAPTERS for t in adapter.model_types)


def adapter_for_model_type(model_type: str) -> FamilyAdapter:
    for adapter in FAMILY_ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise UnsupportedModelError(
        f"model type {model_type!r} has no prefix adapter; supported model types: "
        f"{', '.join(supported_model_types())}. Choose one of those (model.name_or_path) or add a "
        "FamilyAdapter for it in prefixlab/engine/families.py."
    )


def adapter_for(model: nn.Module) -> FamilyAdapter:
    return adapter_for_model_type(model.config.model_type)
