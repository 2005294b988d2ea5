"""How the trainable prefix is parameterized.

Both forms produce the same thing, ``PrefixActivations``; only the MLP form has
something to drop at export (the MLP itself): what is exported is its output.

Layout of one site's activations, shared with PEFT so that its format maps 1:1:
a row per prefix position of ``num_layers * 2 * num_kv_heads * head_dim`` numbers,
read as [position, layer, key|value, kv_head, head_dim].
"""

from __future__ import annotations

import torch
from torch import nn

from prefixlab.engine.geometry import PrefixGeometry, SiteGeometry
from prefixlab.engine.injection import PrefixActivations, SitePrefix


def rows_to_site_prefix(rows: torch.Tensor, geometry: SiteGeometry) -> SitePrefix:
    """[prefix_len, values_per_token] -> SitePrefix with keys/values [layers, 1, kv_heads, prefix_len, head_dim]."""
    prefix_len = rows.shape[0]
    kv = rows.view(prefix_len, geometry.num_layers, 2, geometry.num_kv_heads, geometry.head_dim)
    kv = kv.permute(2, 1, 3, 0, 4).unsqueeze(2)  # [2, layers, 1, kv_heads, prefix_len, head_dim]
    return SitePrefix(keys=kv[0], values=kv[1])


def site_prefix_to_rows(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rows_to_site_prefix`` for batch-free keys/values [layers, kv_heads, prefix_len, head_dim]."""
    kv = torch.stack([keys, values])  # [2, layers, kv_heads, prefix_len, head_dim]
    return kv.permute(3, 1, 0, 2, 4).reshape(keys.shape[2], -1)


class FlatPrefix(nn.Module):
    """The prefix activations are the parameters (the paper's unstable-but-simple form)."""

    def __init__(self, geometry: PrefixGeometry, prefix_length: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.geometry = geometry
        self.prefix_length = prefix_length
        self.rows = nn.ParameterDict(
            {
                site: nn.Parameter(torch.randn(prefix_length, g.values_per_token) * init_std)
                for site, g in geometry.sites.items()
            }
        )

    def forward(self) -> PrefixActivations:
        return PrefixActivations(
            {site: rows_to_site_prefix(self.rows[site], g) for site, g in self.geometry.sites.items()}
        )


class MLPPrefix(nn.Module):
    """Li & Liang's reparameterization, one independent MLP per attention site.

    Embedding(prefix_len, embed_dim) -> [Linear(., mid_dim) -> Tanh] x mlp_layers
    -> Linear(mid_dim, 2 * layers * kv_heads * head_dim), output reshaped per layer.
    """

    def __init__(
        self,
        geometry: PrefixGeometry,
        prefix_length: int,
        embed_dim: int,
        mid_dim: int = 512,
        mlp_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.geometry = geometry
        self.prefix_length = prefix_length
        self.embeddings = nn.ModuleDict({site: nn.Embedding(prefix_length, embed_dim) for site in geometry.sites})
        self.mlps = nn.ModuleDict()
        for site, g in geometry.sites.items():
            layers: list[nn.Module] = []
            width = embed_dim
            for _ in range(mlp_layers):
                layers += [nn.Linear(width, mid_dim), nn.Tanh()]
                width = mid_dim
            layers.append(nn.Linear(width, g.values_per_token))
            self.mlps[site] = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)

    def forward(self) -> PrefixActivations:
        sites = {}
        for site, g in self.geometry.sites.items():
            rows = self.mlps[site](self.embeddings[site].weight)
            sites[site] = rows_to_site_prefix(self.dropout(rows), g)
        return PrefixActivations(sites)


class EmbeddingPrompt(nn.Module):
    """Embedding-only tuning (the paper's EMB-k, i.e. prompt tuning): k trainable input
    embeddings in front of the input; every layer's activations follow from them.

    It produces ``PrefixActivations`` by running the frozen LM over the k embeddings at
    positions 0..k-1 and reading its cache (with gradients), which is exactly what the
    LM computes for those positions when they are prepended at the input, so the rest of
    the engine (generation, mixed batches, export) serves it unchanged, and it exports
    the same flat format as prefix-tuning.

    ``mid_dim`` None: the k embeddings are the parameters ("raw"). ``mid_dim`` set: the original
    code's default, the embeddings are reparameterized like the prefix's activations,
    table [k, d] -> [Linear(., mid_dim) -> Tanh] x mlp_layers -> Linear(mid_dim, d) -> the k input
    embeddings, and the MLP is dropped at export (what is exported is the cache, as above).
    The table starts as the embeddings of ``init_token_ids`` (random vocabulary items without them).
    """

    def __init__(self, lm: nn.Module, prompt_length: int, init_token_ids: list[int] | None = None,
                 mid_dim: int | None = None, mlp_layers: int = 1) -> None:
        super().__init__()
        embeddings = lm.get_input_embeddings().weight
        if init_token_ids is None:
            # start from the embeddings of random vocabulary items (Lester et al.)
            init_token_ids = torch.randint(0, embeddings.shape[0], (prompt_length,)).tolist()
        self.embeddings = nn.Parameter(embeddings[init_token_ids].detach().clone().float())
        self.prefix_length = prompt_length
        self.mlp: nn.Sequential | None = None
        if mid_dim is not None:
            dim, layers, width = embeddings.shape[1], [], embeddings.shape[1]
            for _ in range(mlp_layers):
                layers += [nn.Linear(width, mid_dim), nn.Tanh()]
                width = mid_dim
            self.mlp = nn.Sequential(*layers, nn.Linear(width, dim)).to(embeddings.device)
        object.__setattr__(self, "_lm", lm)  # not a submodule: the LM's weights are not ours

    def input_embeddings(self) -> torch.Tensor:
        """The k input embeddings [k, d] (float32): the table itself, or the MLP's output."""
        return self.embeddings if self.mlp is None else self.mlp(self.embeddings)

    def forward(self) -> PrefixActivations:
        lm = self._lm
        embeddings = self.input_embeddings().to(lm.get_input_embeddings().weight.dtype)[None]
        mask = torch.ones(1, self.prefix_length, dtype=torch.long, device=embeddings.device)
        cache = lm(inputs_embeds=embeddings, attention_mask=mask, use_cache=True).past_key_values
        keys = torch.stack([layer.keys for layer in cache.layers])
        values = torch.stack([layer.values for layer in cache.layers])
        return PrefixActivations({"decoder_self": SitePrefix(keys=keys, values=values)})
