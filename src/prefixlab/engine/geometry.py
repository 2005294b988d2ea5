"""The shape of a prefix: which attention sites it feeds and how big each one is.

A prefix is a set of key/value activations prepended in attention. Its geometry is
fixed by the base model (layers, key/value heads, head size per attention site), so
it is also what decides whether an exported prefix fits a given model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum


class AttentionSite(str, Enum):
    """Where in the network a prefix is prepended.

    Decoder-only LMs have only ``decoder_self``; encoder-only models only ``encoder_self``;
    encoder-decoders all three, each with its own prefix as in Li & Liang (2021).
    """

    DECODER_SELF = "decoder_self"
    ENCODER_SELF = "encoder_self"
    CROSS = "cross"


@dataclass(frozen=True)
class SiteGeometry:
    """Size of the key/value tensors at one attention site.

    ``num_kv_heads`` is the number of *key/value* heads, which is smaller than the
    number of query heads under grouped-query attention (Llama 3, SmolLM2, Qwen2).
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int

    @property
    def values_per_token(self) -> int:
        """Numbers needed per prefix position: keys and values for every layer."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim


@dataclass(frozen=True)
class PrefixGeometry:
    """Geometry of every attention site of a base model that can take a prefix."""

    model_type: str
    sites: dict[str, SiteGeometry]

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, "sites": {name: asdict(g) for name, g in self.sites.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "PrefixGeometry":
        return cls(
            model_type=str(data["model_type"]),
            sites={name: SiteGeometry(**g) for name, g in data["sites"].items()},
        )

    def restricted_to(self, site_names: list[str]) -> "PrefixGeometry":
        unknown = [s for s in site_names if s not in self.sites]
        if unknown:
            raise ValueError(
                f"prefix sites {unknown} do not exist in a {self.model_type!r} model; "
                f"it has {sorted(self.sites)}"
            )
        return PrefixGeometry(self.model_type, {s: self.sites[s] for s in site_names})
