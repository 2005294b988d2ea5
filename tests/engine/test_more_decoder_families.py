"""More decoder-only families (Qwen2, Gemma3 text), unsupported families, gradient checkpointing.

Qwen2 and Gemma3 go through the same Llama-style adapter as Llama; their logits with a
FlatPrefix equal PEFT's prefix tuning (same parameter layout), and greedy ``generate`` equals a
hand-written loop that puts the prefix in a ``DynamicCache``. Tiny random models from configs.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PrefixTuningConfig, get_peft_model
from transformers import (
    DynamicCache,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    MambaConfig,
    MambaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from prefixlab.engine.families import UnsupportedModelError, adapter_for, supported_model_types
from prefixlab.engine.parameterization import FlatPrefix, MLPPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM

from .conftest import PAD, VOCAB, build_lm, pad_rows, random_rows

SITE = "decoder_self"
ATOL = 1e-5
FAMILIES = ("qwen2", "gemma3_text")



def build_decoder(family: str, attn_implementation: str = "sdpa", seed: int = 0):
    """2 layers, 4 query / 2 kv heads (GQA). Gemma3 gets one sliding-window and one full layer;
    its window (32) is longer than any prefix + sequence here, so window edges play no part."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD,
    )
    if family == "qwen2":
        lm = Qwen2ForCausalLM(Qwen2Config(**common))
    elif family == "gemma3_text":
        config = Gemma3TextConfig(
            head_dim=8, sliding_window=32, layer_types=["sliding_attention", "full_attention"], **common
        )
        lm = Gemma3ForCausalLM(config)
    else:
        raise ValueError(family)
    assert lm.config.model_type == family
    lm.set_attn_implementation(attn_implementation)
    lm.generation_config.eos_token_id = None
    lm.generation_config.pad_token_id = PAD
    return lm.eval()


def _flat(lm, prefix_length: int, seed: int) -> FlatPrefix:
    torch.manual_seed(seed)
    return FlatPrefix(adapter_for(lm).geometry(lm), prefix_length, init_std=0.5)


# --------------------------------------------------------------------------- PEFT forward


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_loss_equal_peft_prefix_tuning(family, attn_implementation):
    prefix_length = 4
    lm = build_decoder(family, attn_implementation)
    peft_base, plain = copy.deepcopy(lm), copy.deepcopy(lm)
    flat = _flat(lm, prefix_length, seed=1)
    ours = PrefixedCausalLM(lm, flat).eval()
    g = ours.geometry.sites[SITE]
    assert (g.num_layers, g.num_kv_heads, g.head_dim) == (2, 2, 8)

    pm = get_peft_model(peft_base, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=prefix_length)).eval()
    table = pm.prompt_encoder["default"].embedding.weight
    assert table.shape == flat.rows[SITE].shape
    with torch.no_grad():
        table.copy_(flat.rows[SITE])

    ids, mask = pad_rows(random_rows([7, 4, 6], seed=2), side="right")
    labels = ids.masked_fill(mask == 0, -100)
    attended = mask.bool()
    with torch.no_grad():
        out = ours(ids, mask, labels=labels)
        ref = pm(input_ids=ids, attention_mask=mask, labels=labels)
        base = plain(input_ids=ids, attention_mask=mask, labels=labels)
    assert torch.allclose(out.logits[attended], ref.logits[attended], atol=ATOL), (
        (out.logits[attended] - ref.logits[attended]).abs().max()
    )
    assert torch.allclose(out.loss, ref.loss, atol=ATOL)
    assert not torch.allclose(out.logits[attended], base.logits[attended], atol=1e-3)


# --------------------------------------------------------------------------- generate vs a cache-prefix loop


def _manual_greedy_with_cache_prefix(lm, ids, mask, keys, values, steps: int):
    """Greedy decoding with the prefix (keys/values [layers, 1, kv_heads, P, head_dim]) in a fresh
    ``DynamicCache`` each step, the whole sequence re-run; positions start after the prefix."""
    prefix_length = keys.shape[3]
    logits_per_step = []
    for _ in range(steps):
        batch = ids.shape[0]
        cache = DynamicCache()
        for layer in range(keys.shape[0]):
            cache.update(
                keys[layer].expand(batch, -1, -1, -1).contiguous(), values[layer].expand(batch, -1, -1, -1).contiguous(),
                layer,
            )
        positions = (mask.cumsum(-1) - 1).clamp(min=0) + prefix_length
        full_mask = torch.cat([torch.ones(batch, prefix_length, dtype=mask.dtype), mask], dim=-1)
        out = lm(input_ids=ids, attention_mask=full_mask, position_ids=positions, cache=cache, use_cache=True)
        logits = out.logits[:, -1].float()
        logits_per_step.append(logits)
        next_ids = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_ids], dim=-1)
        mask = torch.cat([mask, torch.ones_like(next_ids)], dim=-1)
    return ids, torch.stack(logits_per_step, dim=1)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generate_equals_cache_prefix_loop(family, attn_implementation):
    prefix_length, steps = 4, 6
    lm = build_decoder(family, attn_implementation)
    reference = copy.deepcopy(lm)
    flat = _flat(lm, prefix_length, seed=3)
    model = PrefixedCausalLM(lm, flat).eval()
    ids, mask = pad_rows(random_rows([6, 4, 2], seed=4), side="left")
    out = model.generate(
        ids, mask, do_sample=False, max_new_tokens=steps, min_new_tokens=steps, pad_token_id=PAD,
        output_logits=True, return_dict_in_generate=True,
    )
    site = flat().detached().sites[SITE]
    with torch.no_grad():
        expected_ids, expected_logits = _manual_greedy_with_cache_prefix(
            reference, ids, mask, site.keys, site.values, steps
        )
    got = torch.stack(out.logits, dim=1).float()
    assert torch.allclose(got, expected_logits, atol=1e-4), (got - expected_logits).abs().max()
    assert torch.equal(out.sequences, expected_ids)


# --------------------------------------------------------------------------- unsupported families


def _tiny_unsupported(model_type: str):
    if model_type == "mamba":
        return MambaForCausalLM(
            MambaConfig(vocab_size=VOCAB, hidden_size=16, state_size=4, num_hidden_layers=1, expand=2, conv_kernel=2)
        )
    return OPTForCausalLM(
        OPTConfig(
            vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
            max_position_embeddings=32, word_embed_proj_dim=16,
        )
    )


@pytest.mark.parametrize("model_type", ["mamba", "opt"])
def test_unsupported_model_type_names_itself_and_the_supported_list(model_type):
    lm = _tiny_unsupported(model_type)
    assert lm.config.model_type == model_type
    implementation = lm.config._attn_implementation
    with pytest.raises(UnsupportedModelError) as error:
        PrefixedCausalLM(lm)
    message = str(error.value)
    assert repr(model_type) in message
    for supported in supported_model_types():
        assert supported in message
    assert {"qwen2", "gemma3_text", "bart", "t5", "bert"} <= set(supported_model_types())
    assert lm.config._attn_implementation == implementation  # nothing was attached
    assert not any(hasattr(m, "_prefixlab_binding") for m in lm.modules())


# --------------------------------------------------------------------------- gradient checkpointing


def _prefix_grads(family: str, checkpointing: dict | None):
    """Prefix-MLP gradients of one training step; the LM frozen, dropout 0, in train mode."""
    lm = build_lm(family, "sdpa")
    for p in lm.parameters():
        p.requires_grad_(False)
    calls = []
    attention = adapter_for(lm).attention_modules(lm)[SITE]
    attention[0].register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(5)
    encoder = MLPPrefix(adapter_for(lm).geometry(lm), prefix_length=4, embed_dim=8, mid_dim=16, mlp_layers=2)
    model = PrefixedCausalLM(lm, encoder)  # attached before checkpointing is enabled: the wrapping must follow
    if checkpointing is not None:
        # no enable_input_require_grads() even for reentrant checkpoints: the prefix keys/values are
        # checkpoint inputs that require grad
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    model.train()
    for m in lm.modules():  # dropout 0: both runs must compute the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    assert all(getattr(m, "attention_dropout", 0.0) == 0.0 for m in attention)

    ids, mask = pad_rows(random_rows([7, 5], seed=6), side="left")
    labels = ids.masked_fill(mask == 0, -100)
    loss = model(ids, mask, labels=labels).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in encoder.named_parameters()}, len(calls)


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_gradient_checkpointing_gives_the_same_prefix_gradients(family, use_reentrant):
    loss, grads, calls = _prefix_grads(family, None)
    ck_loss, ck_grads, ck_calls = _prefix_grads(family, {"use_reentrant": use_reentrant})
    assert calls == 1 and ck_calls == 2  # the checkpointed layer really was re-run in backward
    assert torch.allclose(loss, ck_loss, atol=1e-6)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(ck_grads[name], grad, atol=1e-6), (name, (ck_grads[name] - grad).abs().max())


def test_causal_wrapper_refuses_encoder_decoder_and_encoder_only_models():
    """BART/T5/BERT have adapters now; the causal wrapper must still refuse them (it would
    otherwise run them silently with causal-LM inputs) and leave them as they were."""
    from transformers import BertConfig, BertForSequenceClassification

    from tiny_models import build_seq2seq

    bert = BertForSequenceClassification(
        BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    )
    for lm in (build_seq2seq("bart"), build_seq2seq("t5"), bert):
        implementation = lm.config._attn_implementation
        with pytest.raises(UnsupportedModelError, match="not a decoder-only LM"):
            PrefixedCausalLM(lm)
        assert lm.config._attn_implementation == implementation
        assert not any(hasattr(m, "_prefixlab_binding") for m in lm.modules())
