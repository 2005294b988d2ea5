"""Many prefixes in one batch: each example attends to its own prefix.

Prefixes of different lengths are left-padded to the longest; the padded slots are
masked out (``SitePrefix.mask``) and each example's positions start after its own
prefix length, so every row computes what it would compute alone.
"""

from __future__ import annotations

import torch

from .injection import PrefixActivations, SitePrefix


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
