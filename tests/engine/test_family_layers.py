"""``FamilyAdapter.layers`` / ``final_norm``: where each family keeps the layers whose output the
head reads and the norm after them, the one place methods (FT-top k) and bottleneck adapters ask.

For every supported family, a tiny random model from a config: the stack is the expected module
list, the attention modules the injection binds live in it in order, and in a forward pass the
final norm's input is the last layer's output (the model's head reads what follows it).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    BartConfig,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    MBartConfig,
    MistralConfig,
    MT5Config,
    Olmo2Config,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
    RobertaConfig,
    T5Config,
    XLMRobertaConfig,
)

from prefixlab.engine.bottleneck_adapters import AdapterError, adapter_sites
from prefixlab.engine.families import adapter_for, supported_model_types

VOCAB = 99
LAYERS = 2
_LLAMA_LIKE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
                   bos_token_id=1, eos_token_id=2)
_SEQ2SEQ = dict(vocab_size=VOCAB, d_model=32, encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
_T5 = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=LAYERS, num_decoder_layers=LAYERS, num_heads=4,
           pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
_BERT = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64)

CONFIGS = {
    "gpt2": lambda: GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=LAYERS, n_head=4, n_positions=64),
    "llama": lambda: LlamaConfig(**_LLAMA_LIKE),
    "mistral": lambda: MistralConfig(sliding_window=8, **_LLAMA_LIKE),
    "qwen2": lambda: Qwen2Config(**_LLAMA_LIKE),
    "qwen3": lambda: Qwen3Config(head_dim=8, **_LLAMA_LIKE),
    "gemma3_text": lambda: Gemma3TextConfig(head_dim=8, sliding_window=8,
                                            layer_types=["sliding_attention", "full_attention"], **_LLAMA_LIKE),
    "olmo2": lambda: Olmo2Config(**_LLAMA_LIKE),
    "phi3": lambda: Phi3Config(**_LLAMA_LIKE),
    "bart": lambda: BartConfig(**_SEQ2SEQ),
    "mbart": lambda: MBartConfig(**_SEQ2SEQ),
    "t5": lambda: T5Config(**_T5),
    "mt5": lambda: MT5Config(**_T5),
    "bert": lambda: BertConfig(**_BERT),
    "roberta": lambda: RobertaConfig(pad_token_id=1, **_BERT),
    "xlm-roberta": lambda: XLMRobertaConfig(pad_token_id=1, **_BERT),
    "electra": lambda: ElectraConfig(embedding_size=16, **_BERT),
    "distilbert": lambda: DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=LAYERS, n_heads=4, hidden_dim=64,
                                           max_position_embeddings=64),
}
# Where each family keeps them, written out: (the layer stack, the final norm or None).
EXPECTED = {
    "gpt2": lambda m: (m.transformer.h, m.transformer.ln_f),
    **{t: (lambda m: (m.model.layers, m.model.norm)) for t in ("llama", "mistral", "qwen2", "qwen3", "gemma3_text",
                                                                "olmo2", "phi3")},
    "bart": lambda m: (m.model.decoder.layers, None),  # layernorm_embedding normalizes the input, not the output
    "mbart": lambda m: (m.model.decoder.layers, m.model.decoder.layer_norm),
    "t5": lambda m: (m.decoder.block, m.decoder.final_layer_norm),
    "mt5": lambda m: (m.decoder.block, m.decoder.final_layer_norm),
    **{t: (lambda m: (m.base_model.encoder.layer, None)) for t in ("bert", "roberta", "xlm-roberta", "electra")},
    "distilbert": lambda m: (m.distilbert.transformer.layer, None),
}
DECODER_ONLY = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma3_text", "olmo2", "phi3")
ENCODER_DECODERS = ("bart", "mbart", "t5", "mt5")



def build(model_type: str) -> nn.Module:
    torch.manual_seed(0)
    config = CONFIGS[model_type]()
    if model_type in DECODER_ONLY:
        model = AutoModelForCausalLM.from_config(config)
    elif model_type in ENCODER_DECODERS:
        model = AutoModelForSeq2SeqLM.from_config(config)
    else:
        config.num_labels = 3
        model = AutoModelForSequenceClassification.from_config(config)
    assert model.config.model_type == model_type
    return model.eval()


def test_every_supported_family_is_covered():
    assert sorted(CONFIGS) == supported_model_types()


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_layers_and_final_norm_are_where_the_family_keeps_them(model_type):
    model = build(model_type)
    adapter = adapter_for(model)
    layers, norm = adapter.layers(model), adapter.final_norm(model)
    expected_layers, expected_norm = EXPECTED[model_type](model)
    assert isinstance(layers, nn.ModuleList) and layers is expected_layers and len(layers) == LAYERS
    assert norm is expected_norm

    # the attention modules the injection binds for the output stack are in these layers, in order
    site = "encoder_self" if adapter.is_encoder_only else "decoder_self"
    modules = {s.value: m for s, m in adapter.attention_modules(model).items()}[site]
    assert len(modules) == len(layers)
    for layer, module in zip(layers, modules):
        assert any(module is child for child in layer.modules())


@pytest.mark.parametrize("model_type", [*DECODER_ONLY, "mbart", "t5", "mt5"])  # the families with a final norm
def test_the_final_norm_reads_the_last_layers_output(model_type):
    """The norm that ``final_norm`` names is the one applied to the last layer's output."""
    model = build(model_type)
    adapter = adapter_for(model)
    seen = {}

    def after_last_layer(module, args, out) -> None:  # hooks return None: the forward goes on unchanged
        seen["last"] = out[0] if isinstance(out, (tuple, list)) else out

    def before_norm(module, args) -> None:
        seen["norm"] = args[0]

    adapter.layers(model)[-1].register_forward_hook(after_last_layer)
    adapter.final_norm(model).register_forward_pre_hook(before_norm)
    ids = torch.randint(3, VOCAB, (2, 5))
    with torch.no_grad():
        if adapter.is_encoder_decoder:
            model(input_ids=ids, decoder_input_ids=ids[:, :3])
        else:
            model(input_ids=ids)
    assert torch.equal(seen["last"], seen["norm"])


@pytest.mark.parametrize("model_type", DECODER_ONLY)
def test_bottleneck_adapters_sit_in_the_family_layers(model_type):
    model = build(model_type)
    layers = adapter_for(model).layers(model)
    sites = adapter_sites(model, "houlsby")
    assert len(sites) == 2 * len(layers)
    for index, site in enumerate(sites):
        assert any(site is child for child in layers[index // 2].modules())


@pytest.mark.parametrize("model_type", ["bart", "t5", "bert"])
def test_bottleneck_adapters_refuse_models_that_are_not_decoder_only(model_type):
    with pytest.raises(AdapterError, match="decoder-only"):
        adapter_sites(build(model_type), "ffn")
