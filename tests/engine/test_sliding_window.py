"""Sliding-window layers (Mistral, Qwen2 with ``use_sliding_window``, Gemma3's local layers, Phi-3):
prefixlab's prefix is seen by every token, wherever the window is; PEFT's cache-based prefix is not.

prefixlab prepends the prefix's keys and values inside the attention call and widens the mask
that transformers built for the real tokens with prefix columns that are always visible
(``injection._prepend_to_mask``): the window applies among the real tokens only, exactly as in
a run without prefix. PEFT puts the prefix in the cache at positions 0..P-1, so the model's
sliding-window mask treats it as the oldest tokens: token i (0-based, after a P-slot prefix)
sees the prefix slots j with j > P + i - W, so it loses slot 0 at i = W - P and the whole prefix
at i = W - 1. Both agree while the prefix and the tokens fit in the window (i < W - P).

A one-layer model, so that a token's output depends on the prefix only through its own
attention: a different prefix changes the output exactly at the positions that see it.
This pins prefixlab's current semantics; it is documented in the README (The prefix engine).
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PrefixTuningConfig, get_peft_model
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from prefixlab.engine.families import adapter_for
from prefixlab.engine.parameterization import FlatPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM

VOCAB = 101
WINDOW = 4
PREFIX = 3
TOKENS = 10
SITE = "decoder_self"
FAMILIES = ("mistral", "qwen2", "gemma3_text", "phi3")



def build(family: str, attn_implementation: str):
    """One sliding-window layer (window 4), 4 query / 2 kv heads."""
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  sliding_window=WINDOW)
    if family == "mistral":
        lm = MistralForCausalLM(MistralConfig(**common))
    elif family == "qwen2":
        lm = Qwen2ForCausalLM(Qwen2Config(use_sliding_window=True, max_window_layers=0, **common))
    elif family == "gemma3_text":
        lm = Gemma3ForCausalLM(Gemma3TextConfig(head_dim=8, layer_types=["sliding_attention"], **common))
    else:
        lm = Phi3ForCausalLM(Phi3Config(**common))
    assert lm.config.model_type == family and lm.config.sliding_window == WINDOW
    lm.set_attn_implementation(attn_implementation)
    return lm.eval()


def _prefix(lm, seed: int) -> FlatPrefix:
    torch.manual_seed(seed)
    return FlatPrefix(adapter_for(lm).geometry(lm), PREFIX, init_std=0.5)


def _changed(a: torch.Tensor, b: torch.Tensor) -> list[bool]:
    """Per position of [1, seq, vocab] logits: does it differ?"""
    return [bool((a[0, i] - b[0, i]).abs().max() > 1e-4) for i in range(a.shape[1])]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_token_sees_the_prefix_and_a_cache_prefix_falls_out_of_the_window(family, attn_implementation):
    lm = build(family, attn_implementation)
    peft_lm = get_peft_model(copy.deepcopy(lm), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=PREFIX)).eval()
    table = peft_lm.prompt_encoder["default"].embedding.weight
    ours = PrefixedCausalLM(lm).eval()
    first, second = _prefix(lm, 1), _prefix(lm, 2)
    ids = torch.randint(3, VOCAB, (1, TOKENS), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)

    with torch.no_grad():
        ours_first, ours_second = (ours(ids, mask, prefix=p()).logits for p in (first, second))
        theirs = []
        for p in (first, second):
            table.copy_(p.rows[SITE])
            theirs.append(peft_lm(input_ids=ids, attention_mask=mask).logits)

    # prefixlab: every token sees the prefix, those beyond the window (i >= WINDOW - 1) too
    assert _changed(ours_first, ours_second) == [True] * TOKENS
    # PEFT: the prefix falls out of the window at token WINDOW - 1
    assert _changed(theirs[0], theirs[1]) == [i < WINDOW - 1 for i in range(TOKENS)]
    # equal while prefix and tokens fit in the window (i < WINDOW - PREFIX), different after
    assert _changed(ours_first, theirs[0]) == [i >= WINDOW - PREFIX for i in range(TOKENS)]
