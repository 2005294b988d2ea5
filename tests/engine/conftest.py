"""Tiny random models for the engine tests: built from configs, nothing downloaded."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

FAMILIES = ("gpt2", "llama")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
PAD = 0
VOCAB = 101


def build_lm(family: str, attn_implementation: str = "sdpa", seed: int = 0) -> torch.nn.Module:
    """A 2-layer random causal LM in eval mode; Llama uses grouped-query attention (4 query / 2 kv heads).

    ``eos_token_id`` is removed from the generation config so that every generate call runs to
    ``max_new_tokens`` and outputs can be compared token for token.
    """
    torch.manual_seed(seed)
    if family == "llama":
        config = LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=PAD,
        )
        lm = LlamaForCausalLM(config)
    elif family == "gpt2":
        config = GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2,
            pad_token_id=PAD,
        )
        lm = GPT2LMHeadModel(config)
    else:
        raise ValueError(family)
    lm.set_attn_implementation(attn_implementation)
    lm.generation_config.eos_token_id = None
    lm.generation_config.pad_token_id = PAD
    return lm.eval()
