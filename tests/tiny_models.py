"""Tiny random models for every test: built from configs, nothing downloaded.

One set of sizes for the whole suite: GPT-2 and Llama with 2 layers, hidden 32 and 4 heads
(Llama with grouped-query attention: 4 query / 2 kv heads), BART and T5 with 2 + 2 layers,
d_model 32 and 4 heads. A test that needs a variant (another vocabulary, the embedded
tokenizer's special tokens, dropout) passes config fields as keyword overrides: the same
config and seed always give the same weights. ``tests/conftest.py`` offers the module as the
``tiny_models`` fixture; helpers that run outside a test import it directly.
"""

from __future__ import annotations

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

CAUSAL_FAMILIES = ("gpt2", "llama")
SEQ2SEQ_FAMILIES = ("bart", "t5")
PAD = 0
VOCAB = 101  # causal LMs
SEQ2SEQ_VOCAB = 99


def causal_config(family: str, **overrides):
    """The config of ``build_lm``; ``overrides`` are config fields."""
    if family == "llama":
        base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD)
        return LlamaConfig(**{**base, **overrides})
    if family == "gpt2":
        base = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2,
                    pad_token_id=PAD)
        return GPT2Config(**{**base, **overrides})
    raise ValueError(family)


def seq2seq_config(family: str, **overrides):
    """The config of ``build_seq2seq``; ``overrides`` are config fields."""
    if family == "bart":
        base = dict(vocab_size=SEQ2SEQ_VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                    pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, tie_word_embeddings=False)
        return BartConfig(**{**base, **overrides})
    if family == "t5":
        base = dict(vocab_size=SEQ2SEQ_VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False)
        return T5Config(**{**base, **overrides})
    raise ValueError(family)


def build_lm(family: str, attn_implementation: str = "sdpa", seed: int | None = 0, run_to_max_new_tokens: bool = True,
             **overrides) -> torch.nn.Module:
    """A 2-layer random causal LM (``family``: gpt2 | llama) in eval mode, its weights drawn after
    ``torch.manual_seed(seed)`` (``seed=None``: from the current random state).

    ``run_to_max_new_tokens``: eos is removed from the generation config so that every generate
    call runs to ``max_new_tokens`` and outputs can be compared token for token.
    """
    if seed is not None:
        torch.manual_seed(seed)
    config = causal_config(family, **overrides)
    lm = (LlamaForCausalLM if family == "llama" else GPT2LMHeadModel)(config)
    lm.set_attn_implementation(attn_implementation)
    if run_to_max_new_tokens:
        lm.generation_config.eos_token_id = None
        lm.generation_config.pad_token_id = config.pad_token_id
    return lm.eval()


def build_seq2seq(family: str, attn_implementation: str = "sdpa", seed: int | None = 0, redraw_std: float | None = 0.2,
                  run_to_max_new_tokens: bool = True, **overrides) -> torch.nn.Module:
    """A 2+2-layer random encoder-decoder (``family``: bart | t5) in eval mode.

    ``redraw_std``: weight matrices are redrawn with this std (None: the config's own init). At
    the configs' default init (BART std 0.02, tied embeddings) greedy decoding just repeats the
    start token, which would make generation tests toothless. ``run_to_max_new_tokens``: eos /
    forced eos / forced bos are dropped so every generate call runs to ``max_new_tokens``.
    """
    if seed is not None:
        torch.manual_seed(seed)
    config = seq2seq_config(family, **overrides)
    lm = (BartForConditionalGeneration if family == "bart" else T5ForConditionalGeneration)(config)
    if redraw_std is not None:
        with torch.no_grad():
            for p in lm.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, redraw_std)
    lm.set_attn_implementation(attn_implementation)
    if run_to_max_new_tokens:
        lm.generation_config.eos_token_id = None
        lm.generation_config.forced_eos_token_id = None
        lm.generation_config.forced_bos_token_id = None
        lm.generation_config.pad_token_id = lm.config.pad_token_id
    return lm.eval()


def build_model(family: str, **kwargs) -> torch.nn.Module:
    """``build_lm`` or ``build_seq2seq`` by family."""
    return (build_seq2seq if family in SEQ2SEQ_FAMILIES else build_lm)(family, **kwargs)


def save_with_tokenizer(lm: torch.nn.Module, tokenizer, folder) -> str:
    """``lm`` and ``tokenizer`` as an ordinary local model folder (what ``model.name_or_path`` takes)."""
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def random_rows(lengths: list[int], seed: int, vocab: int = VOCAB) -> list[torch.Tensor]:
    """Token rows of the given lengths, drawn from ``[3, vocab)`` (above the special ids)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=gen) for n in lengths]


def pad_rows(rows: list[torch.Tensor], side: str, pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D token rows into (input_ids, attention_mask), padding with ``pad`` on ``side``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = row
        mask[i, span] = 1
    return ids, mask
