"""Real-word initialization (Li & Liang, section 7.2): the prefix starts as the LM's own
key/value activations of real words, e.g. "summarize" or "table-to-text:".

The activations are read from the model's cache after it has read the words at positions
0..P-1 (keys already rotated, as a cache holds them). Real tokens are placed at positions
after the prefix, so a prefix initialized this way makes the model compute exactly what it
computes with the words typed in front of the input: training starts from a text prompt.
"""

from __future__ import annotations

import torch
from torch import nn

from prefixlab.engine.injection import PrefixActivations, SitePrefix
from prefixlab.engine.parameterization import FlatPrefix, MLPPrefix, site_prefix_to_rows


def init_token_ids(tokenizer, text: str, prefix_length: int) -> list[int]:
    """The words' token ids, repeated or cut to exactly ``prefix_length``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"method.init_text={text!r} has no tokens; give some words, e.g. 'summarize'")
    return (ids * (prefix_length // len(ids) + 1))[:prefix_length]


@torch.no_grad()
def word_activations(lm: nn.Module, token_ids: list[int]) -> PrefixActivations:
    """Decoder self-attention keys/values of ``token_ids`` read at positions 0..P-1:
    [layers, 1, kv_heads, P, head_dim] each."""
    ids = torch.tensor([token_ids], device=lm.device)
    cache = lm(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).past_key_values
    keys = torch.stack([layer.keys for layer in cache.layers])
    values = torch.stack([layer.values for layer in cache.layers])
    return PrefixActivations({"decoder_self": SitePrefix(keys=keys.float(), values=values.float())})


@torch.no_grad()
def initialize_from_activations(prefix_encoder: nn.Module, activations: PrefixActivations) -> None:
    """Make ``prefix_encoder()`` output ``activations`` (per site present in both).

    Flat: copy. MLP: solve the last Linear exactly by least squares on the hidden features
    of the current embedding and earlier layers (mid_dim >= prefix length makes it exact),
    so both forms start from the same prefix, as the original code's MLP fitting intends.
    """
    for site, prefix in activations.sites.items():
        rows = site_prefix_to_rows(prefix.keys[:, 0], prefix.values[:, 0])  # [P, values_per_token]
        if isinstance(prefix_encoder, FlatPrefix):
            prefix_encoder.rows[site].copy_(rows.to(prefix_encoder.rows[site].dtype))
        elif isinstance(prefix_encoder, MLPPrefix):
            mlp = prefix_encoder.mlps[site]
            hidden = mlp[:-1](prefix_encoder.embeddings[site].weight)  # [P, mid_dim]
            features = torch.cat([hidden, torch.ones_like(hidden[:, :1])], dim=1).double()
            solution = torch.linalg.lstsq(features, rows.double(), driver="gelsd").solution  # [mid+1, out]
            last = mlp[-1]
            last.weight.copy_(solution[:-1].T.to(last.weight.dtype))
            last.bias.copy_(solution[-1].to(last.bias.dtype))
        else:
            raise TypeError(f"cannot initialize a {type(prefix_encoder).__name__} from activations")
