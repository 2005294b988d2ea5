"""Many prefixes in one batch: each example attends to its own prefix.

Prefixes of different lengths are left-padded to the longest; the padded slots are
masked out (``SitePrefix.mask``) and each example's positions start after its own
prefix length, so every row computes what it would compute alone.
"""

from __future__ import annotations

import dataclasses

import torch

from prefixlab.engine.injection import PrefixActivations, SitePrefix
from prefixlab.engine.padding import pad_rows


def stack_prefixes(per_example: list[PrefixActivations]) -> PrefixActivations:
    """Batch-1 prefixes, one per example -> one PrefixActivations of batch len(per_example).

    A site missing from some prefixes is given zero real slots for those examples.
    """
    if not per_example:
        raise ValueError("no prefixes to stack")
    site_names = sorted({name for p in per_example for name in p.sites})
    sites = {}
    for name in site_names:
        template = next(p.sites[name] for p in per_example if name in p.sites)
        layers, _, heads, _, head_dim = template.keys.shape
        width = max(p.sites[name].length for p in per_example if name in p.sites)
        keys = template.keys.new_zeros(layers, len(per_example), heads, width, head_dim)
        values = torch.zeros_like(keys)
        mask = torch.zeros(len(per_example), width, dtype=torch.bool, device=keys.device)
        for row, prefix in enumerate(per_example):
            site = prefix.sites.get(name)
            if site is None:
                continue
            if site.keys.shape[1] != 1:
                raise ValueError("stack_prefixes takes batch-1 prefixes")
            length = site.length
            keys[:, row, :, width - length :] = site.keys[:, 0]
            values[:, row, :, width - length :] = site.values[:, 0]
            mask[row, width - length :] = True if site.mask is None else site.mask[0]
        sites[name] = SitePrefix(keys=keys, values=values, mask=mask)
    return PrefixActivations(sites)


def with_visibility(prefix: PrefixActivations, visible_from: torch.Tensor) -> PrefixActivations:
    """Make a prefix an infix: seen only by tokens from ``visible_from`` [batch] on."""
    return PrefixActivations({n: dataclasses.replace(p, visible_from=visible_from) for n, p in prefix.sites.items()})


@torch.no_grad()
def generate_mixed(
    model,
    prompts: list[list[int]],
    prefixes: list[PrefixActivations],
    pad_token_id: int,
    infix_rows: list[bool] | None = None,
    **generate_kwargs,
) -> torch.Tensor:
    """One generate() call in which row i is ``prompts[i]`` with its own prefix ``prefixes[i]``
    (batch-1 prefixes, any lengths; ``PrefixActivations({})`` for none). An infix row
    (``infix_rows[i]``) sees its prefix from the last prompt token on, as the source cannot
    see an infix. ``model``: a PrefixedCausalLM or PrefixedSeq2SeqLM. Returns the new tokens,
    [rows, new], padded with ``pad_token_id`` after a row's end.

    The one place that builds a mixed-prefix batch for decoding: prefixlab-generate's
    ``MixedPrefixGenerator`` and the packed sweeps' evaluation both call it.
    """
    encoder_decoder = bool(model.lm.config.is_encoder_decoder)
    device = next(model.lm.parameters()).device
    # decoder-only prompts end together (left padding); encoders keep positions from 0 (right)
    ids, mask = pad_rows(prompts, pad_token_id, left=not encoder_decoder)
    width = ids.shape[1]
    prefix = stack_prefixes(prefixes)
    if infix_rows is not None and any(infix_rows):
        prefix = with_visibility(prefix, torch.tensor([width - 1 if infix else 0 for infix in infix_rows], device=device))
    output = model.generate(ids.to(device), mask.to(device), prefix=prefix, pad_token_id=pad_token_id, **generate_kwargs)
    return output if encoder_decoder else output[:, width:]
