"""Where the prefix meets the attention.

transformers (>= 5) routes every attention computation of every modern model family
through one function looked up by name in ``AttentionInterface`` and called as
``fn(module, query, key, value, attention_mask, **kwargs)`` *after* the module has
projected, rotated (RoPE) and cached its keys and values. We register two wrappers,
``prefixlab_sdpa`` and ``prefixlab_eager``, that prepend the active prefix's keys and
values for that module's site and layer and widen the mask, then call the stock
implementation. Doing it here rather than through ``past_key_values`` (PEFT's way) is
what makes the engine work the same for

* every attention site: decoder self-attention, encoder self-attention, cross-attention;
* ``generate()`` with any cache, beam search included (the cache never holds the prefix,
  so it cannot be dropped, reordered wrongly or truncated);
* gradient checkpointing (layers are re-run with the same prefix);
* a prefix that differs per example within one batch (``SitePrefix.mask`` marks the
  padded slots of shorter prefixes).

Prefix keys are used as they are (not rotated): the same convention as the original
code and PEFT, where they sit in the cache.

Sliding-window layers (Mistral, Qwen2 with ``use_sliding_window``, Phi-3, Gemma3's local
layers): the incoming mask is the model's own, built over the real tokens only, window
included, and the prefix columns prepended here are visible to every query (only
``SitePrefix.mask`` and ``visible_from`` restrict them). So every token sees the whole prefix
in every layer, however far it is from the start; the window still applies among the real
tokens exactly as without a prefix (sdpa and eager, the implementations that take a prefix,
get the window only through that mask). A cache-based prefix (PEFT) sits at cache positions
0..P-1, where the window reaches it: token i (0-based, after P prefix slots, window W) sees
slot j only if j > P + i - W, and no slot from i = W - 1 on. The two agree while the prefix
and the tokens fit in the window (P + i < W). ``tests/engine/test_sliding_window.py`` pins both.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
from torch import nn

from prefixlab.engine.families import FamilyAdapter, adapter_for
from prefixlab.engine.geometry import PrefixGeometry

_BASE_IMPLEMENTATIONS = ("sdpa", "eager")
_WRAPPED_NAME = {base: f"prefixlab_{base}" for base in _BASE_IMPLEMENTATIONS}


@dataclass
class SitePrefix:
    """Prefix activations for one attention site.

    keys, values: [num_layers, batch, num_kv_heads, prefix_len, head_dim]; ``batch`` is 1
        for one prefix shared by the whole batch (broadcast), or the batch size.
    mask: [batch, prefix_len] bool, True where a prefix slot is real; None = all real.
        Shorter prefixes in a mixed batch are padded on the left and masked out.
    visible_from: [batch] long, or None: only tokens at this index of the (padded) input
        and later see the prefix; None = every token. An infix (the paper's INFIX-k) is a
        prefix that the source cannot see and the target can: visible from the last
        source token on.
    """

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor | None = None
    visible_from: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.keys.shape != self.values.shape or self.keys.dim() != 5:
            raise ValueError(
                "prefix keys and values must both be [layers, batch, kv_heads, prefix_len, head_dim], got "
                f"{tuple(self.keys.shape)} and {tuple(self.values.shape)}"
            )

    @property
    def length(self) -> int:
        return self.keys.shape[3]

    def lengths(self, batch_size: int) -> torch.Tensor:
        """Real prefix length of each example: [batch]."""
        if self.mask is None:
            return torch.full((batch_size,), self.length, dtype=torch.long, device=self.keys.device)
        lengths = self.mask.sum(-1).long()
        return lengths.expand(batch_size) if lengths.shape[0] == 1 else lengths

    def visible_from_for(self, batch_size: int) -> torch.Tensor | None:
        """``visible_from`` expanded to a batch of ``batch_size`` (beams repeat each example in place)."""
        if self.visible_from is None or self.visible_from.shape[0] == batch_size:
            return self.visible_from
        if self.visible_from.shape[0] == 1:
            return self.visible_from.expand(batch_size)
        return self.visible_from.repeat_interleave(batch_size // self.visible_from.shape[0])

    def layer(self, layer_idx: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Keys, values [batch, kv_heads, prefix_len, head_dim] and mask [batch, prefix_len] for one layer.

        ``batch_size`` may be a multiple of the prefix batch: beam search and
        ``num_return_sequences`` repeat every example in place (repeat_interleave).
        """
        keys, values, mask = self.keys[layer_idx], self.values[layer_idx], self.mask
        prefix_batch = keys.shape[0]
        if prefix_batch == batch_size:
            return keys, values, mask
        if prefix_batch == 1:
            shape = (batch_size, *keys.shape[1:])
            mask = None if mask is None else mask.expand(batch_size, -1)
            return keys.expand(shape), values.expand(shape), mask
        if batch_size % prefix_batch:
            raise ValueError(f"batch of {batch_size} does not fit a prefix batch of {prefix_batch}")
        repeats = batch_size // prefix_batch
        mask = None if mask is None else mask.repeat_interleave(repeats, dim=0)
        return keys.repeat_interleave(repeats, dim=0), values.repeat_interleave(repeats, dim=0), mask


@dataclass
class PrefixActivations:
    """The prefix for one forward or generate call: one ``SitePrefix`` per attention site."""

    sites: dict[str, SitePrefix] = field(default_factory=dict)

    def lengths(self, batch_size: int) -> torch.Tensor:
        """Prefix length per example at the site whose tokens get positions (decoder or encoder self)."""
        for name in ("decoder_self", "encoder_self"):
            if name in self.sites:
                return self.sites[name].lengths(batch_size)
        return torch.zeros(batch_size, dtype=torch.long)

    def detached(self) -> "PrefixActivations":
        return PrefixActivations(
            {
                name: SitePrefix(p.keys.detach(), p.values.detach(), p.mask, p.visible_from)
                for name, p in self.sites.items()
            }
        )


class _PrefixSlot:
    """Shared by all attention modules of one model: the prefix active right now."""

    def __init__(self) -> None:
        self.active: PrefixActivations | None = None
        # Every layer of one forward gets the same mask object: widen it once, not once per layer.
        # Per site: (incoming mask, SitePrefix, shape key, widened mask).
        self.mask_memo: dict[str, tuple] = {}


class _ReplayPrefix:
    """A layer's checkpoint function (``_gradient_checkpointing_func``) that runs the layer with the
    prefix active when it was called, both then and when backward re-runs it: that recomputation
    happens after ``activated()`` has exited, where the slot holds no prefix (or another one).
    The prefix keys/values go in as extra checkpoint inputs, so that reentrant checkpoints, which
    only return gradients for their inputs, route the prefix gradients too."""

    def __init__(self, checkpoint, slot: _PrefixSlot) -> None:
        self.checkpoint, self.slot = checkpoint, slot

    def __call__(self, function, *args, **kwargs):
        prefix = self.slot.active
        names = [] if prefix is None else list(prefix.sites)
        tensors = [t for name in names for t in (prefix.sites[name].keys, prefix.sites[name].values)]

        def run_with_prefix(*inner_args, **inner_kwargs):
            layer_args, kv = inner_args[: len(args)], inner_args[len(args) :]
            replayed = None
            if prefix is not None:
                sites = {n: replace(prefix.sites[n], keys=kv[2 * i], values=kv[2 * i + 1]) for i, n in enumerate(names)}
                replayed = replace(prefix, sites=sites)
            previous, self.slot.active = self.slot.active, replayed
            try:
                return function(*layer_args, **inner_kwargs)
            finally:
                self.slot.active = previous

        return self.checkpoint(run_with_prefix, *args, *tensors, **kwargs)


def _replay_prefix_in_checkpoints(model: nn.Module, slot: _PrefixSlot | None) -> None:
    """Wrap (slot) or unwrap (None) every layer's checkpoint function. transformers sets them per
    layer in ``gradient_checkpointing_enable``, which may come after attaching: so this runs on
    every activation that can be checkpointed."""
    for module in model.modules():
        checkpoint = module.__dict__.get("_gradient_checkpointing_func")
        if checkpoint is None or (isinstance(checkpoint, _ReplayPrefix) and checkpoint.slot is slot):
            continue
        if isinstance(checkpoint, _ReplayPrefix):
            checkpoint = checkpoint.checkpoint
        module._gradient_checkpointing_func = checkpoint if slot is None else _ReplayPrefix(checkpoint, slot)


def _causal_or_full_mask(query_len: int, key_len: int, causal: bool, device: torch.device) -> torch.Tensor:
    """[1, 1, q, k] bool mask; causal is aligned bottom-right (the queries are the last tokens)."""
    if not causal or query_len == 1:
        return torch.ones(1, 1, query_len, key_len, dtype=torch.bool, device=device)
    offset = key_len - query_len
    rows = torch.arange(query_len, device=device)[:, None] + offset
    cols = torch.arange(key_len, device=device)[None, :]
    return (cols <= rows)[None, None]


def _prepend_to_mask(
    attention_mask: torch.Tensor | None,
    prefix_mask: torch.Tensor | None,
    prefix_len: int,
    batch_size: int,
    query_len: int,
    key_len: int,
    causal: bool,
    device: torch.device,
    float_dtype: torch.dtype | None,
    visible_from: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Widen a [b, h, q, k] mask (bool, additive float or None) by the prefix slots on the left."""
    if attention_mask is None and prefix_mask is None and visible_from is None and (not causal or query_len == 1):
        return None  # every query sees every key and the whole prefix: no mask needed
    if attention_mask is None:
        attention_mask = _causal_or_full_mask(query_len, key_len, causal, device)
        if float_dtype is not None:
            attention_mask = _bool_to_additive(attention_mask, float_dtype)
    if prefix_mask is None:
        prefix_mask = torch.ones(batch_size, prefix_len, dtype=torch.bool, device=device)
    heads = attention_mask.shape[1]
    if attention_mask.shape[0] != batch_size:
        attention_mask = attention_mask.expand(batch_size, -1, -1, -1)
    visible = prefix_mask[:, None, None, :].expand(batch_size, heads, attention_mask.shape[2], prefix_len)
    if visible_from is not None:  # the queries are the last query_len of key_len tokens
        query_index = torch.arange(key_len - query_len, key_len, device=device)
        query_sees = query_index[None, :] >= visible_from.to(device)[:, None]  # [b, q]
        visible = visible & query_sees[:, None, :, None]
    if attention_mask.dtype == torch.bool:
        prefix_part = visible
    else:
        prefix_part = _bool_to_additive(visible, attention_mask.dtype)
    return torch.cat([prefix_part.to(attention_mask.device), attention_mask], dim=-1)


def _bool_to_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    zeros = torch.zeros((), dtype=dtype, device=mask.device)
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=mask.device)
    return torch.where(mask, zeros, blocked)


def _stock_attention(module: nn.Module, base: str):
    if base == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward
    # Each modeling file has its own eager function (softcapping, sinks, ...): use the module's.
    modeling = sys.modules[type(module).__module__]
    return getattr(modeling, "eager_attention_forward")


def _make_prefixed_attention(base: str):
    def prefixed_attention(module, query, key, value, attention_mask, **kwargs):
        stock = _stock_attention(module, base)
        binding = getattr(module, "_prefixlab_binding", None)
        active = None if binding is None else binding[0].active
        site_prefix = None if active is None else active.sites.get(binding[1])
        if site_prefix is None:
            return stock(module, query, key, value, attention_mask, **kwargs)

        batch_size, query_len, key_len = query.shape[0], query.shape[2], key.shape[2]
        prefix_keys, prefix_values, prefix_mask = site_prefix.layer(binding[2], batch_size)
        key = torch.cat([prefix_keys.to(key.dtype), key], dim=2)
        value = torch.cat([prefix_values.to(value.dtype), value], dim=2)
        is_causal = kwargs.pop("is_causal", None)
        causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
        slot, site = binding[0], binding[1]
        shape_key = (batch_size, query_len, key_len, causal, base, query.dtype)
        memo = slot.mask_memo.get(site)
        if memo is not None and memo[0] is attention_mask and memo[1] is site_prefix and memo[2] == shape_key:
            widened = memo[3]
        else:
            incoming = attention_mask
            if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
                attention_mask = attention_mask[:, None, None, :].to(torch.bool)  # padding mask [b, k]
            widened = _prepend_to_mask(
                attention_mask,
                prefix_mask,
                prefix_keys.shape[2],
                batch_size,
                query_len,
                key_len,
                causal,
                key.device,
                float_dtype=query.dtype if base == "eager" else None,
                visible_from=site_prefix.visible_from_for(batch_size),
            )
            slot.mask_memo[site] = (incoming, site_prefix, shape_key, widened)
        attention_mask = widened
        position_bias = kwargs.get("position_bias")
        if position_bias is not None:  # T5: relative position bias has no meaning for prefix slots
            pad = position_bias.new_zeros(*position_bias.shape[:-1], prefix_keys.shape[2])
            kwargs["position_bias"] = torch.cat([pad, position_bias], dim=-1)
        if attention_mask is None:
            kwargs["is_causal"] = False
        return stock(module, query, key, value, attention_mask, **kwargs)

    return prefixed_attention


_registered = False


def _register_attention_functions() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    for base, name in _WRAPPED_NAME.items():
        AttentionInterface.register(name, _make_prefixed_attention(base))
        # The model builds its masks for the implementation by name; ours wants the stock ones.
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    _registered = True


class PrefixInjector:
    """Binds a model's attention modules so that an active prefix is prepended in each.

    Attaching changes nothing until a prefix is activated with ``activated(prefix)``;
    outside that context (or with ``None``) the model computes exactly what it did before.
    """

    def __init__(self, model: nn.Module, adapter: FamilyAdapter | None = None) -> None:
        self.model = model
        self.adapter = adapter or adapter_for(model)
        self.geometry: PrefixGeometry = self.adapter.geometry(model)
        self._slot = _PrefixSlot()
        implementation = model.config._attn_implementation
        self._original_implementation = implementation
        if implementation in _WRAPPED_NAME.values():
            raise ValueError("this model already has a PrefixInjector attached; detach it first")
        if implementation not in _BASE_IMPLEMENTATIONS:
            raise ValueError(
                f"attention implementation {implementation!r} cannot take a prefix yet; load the model with "
                "attn_implementation='sdpa' or 'eager'"
            )
        _register_attention_functions()
        model.set_attn_implementation(_WRAPPED_NAME[implementation])
        for site, modules in self.adapter.attention_modules(model).items():
            for layer_idx, module in enumerate(modules):
                module._prefixlab_binding = (self._slot, site.value, layer_idx)

    @property
    def active(self) -> PrefixActivations | None:
        return self._slot.active

    @contextmanager
    def activated(self, prefix: PrefixActivations | None) -> Iterator[None]:
        """Use ``prefix`` in every attention call inside the block (None: the plain model)."""
        previous = self._slot.active
        if prefix is not None and torch.is_grad_enabled():
            _replay_prefix_in_checkpoints(self.model, self._slot)
        self._slot.active = prefix
        try:
            yield
        finally:
            self._slot.active = previous
            self._slot.mask_memo.clear()

    def detach(self) -> None:
        """Restore the model exactly as it was before attaching."""
        for modules in self.adapter.attention_modules(self.model).values():
            for module in modules:
                module.__dict__.pop("_prefixlab_binding", None)
        _replay_prefix_in_checkpoints(self.model, None)
        self.model.set_attn_implementation(self._original_implementation)
