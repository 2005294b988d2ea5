"""stack_prefixes: one batch, a different prefix (and length) per example."""

import pytest
import torch

from prefixlab.engine.mixing import stack_prefixes
from prefixlab.engine.parameterization import FlatPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM

from .conftest import build_lm


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_stacked_prefixes_generate_what_each_example_generates_alone(family):
    model = PrefixedCausalLM(build_lm(family))
    prefixes = [FlatPrefix(model.geometry, n, init_std=1.0)() for n in (2, 5, 3)]
    prefixes = [p.detached() for p in prefixes] + [None]  # the last example: no prefix at all
    ids = torch.randint(1, 101, (4, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    ids[mask == 0] = 0
    from prefixlab.engine.injection import PrefixActivations

    stacked = stack_prefixes([p if p is not None else PrefixActivations({}) for p in prefixes])
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    together = model.generate(ids, mask, prefix=stacked, **kwargs)
    for row, prefix in enumerate(prefixes):
        real = mask[row] == 1
        alone = model.generate(ids[row : row + 1, real], mask[row : row + 1, real], prefix=prefix, **kwargs)
        assert torch.equal(together[row, -5:], alone[0, -5:]), f"row {row}"
