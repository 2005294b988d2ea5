"""Infix (INFIX-k): activations that the source cannot see and the target can."""

import dataclasses

import pytest
import torch

from prefixlab.engine.injection import PrefixActivations
from prefixlab.engine.parameterization import FlatPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM

from .conftest import build_lm


def _as_infix(prefix: PrefixActivations, visible_from: torch.Tensor) -> PrefixActivations:
    return PrefixActivations({n: dataclasses.replace(p, visible_from=visible_from) for n, p in prefix.sites.items()})


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_tokens_before_the_infix_are_untouched_and_tokens_after_see_it(family, attn):
    model = PrefixedCausalLM(build_lm(family, attn))
    prefix = FlatPrefix(model.geometry, 3, init_std=1.0)().detached()
    ids = torch.randint(1, 101, (2, 8))
    mask = torch.ones_like(ids)
    visible_from = torch.tensor([4, 6])
    with torch.no_grad():
        infix = model(ids, mask, prefix=_as_infix(prefix, visible_from)).logits
        as_prefix = model(ids, mask, prefix=prefix).logits
        # before the infix: what the model computes with no prefix, but at positions after it
        shifted = model.lm(input_ids=ids, attention_mask=mask, position_ids=torch.arange(3, 11)[None].expand(2, -1)).logits
    for row, start in enumerate(visible_from.tolist()):
        assert torch.allclose(infix[row, :start], shifted[row, :start], atol=1e-5)
        # the last token sees the infix, and through it the earlier visible ones
        assert not torch.allclose(infix[row, start:], shifted[row, start:], atol=1e-4)
        assert not torch.allclose(infix[row, start:], as_prefix[row, start:], atol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_infix_generation_equals_full_recomputation(family):
    model = PrefixedCausalLM(build_lm(family))
    prefix = FlatPrefix(model.geometry, 3, init_std=1.0)().detached()
    ids = torch.randint(1, 101, (1, 5))
    mask = torch.ones_like(ids)
    infix = _as_infix(prefix, torch.tensor([4]))
    generated = model.generate(ids, mask, prefix=infix, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    # token by token without cache: each step recomputes the whole sequence with the same infix
    sequence = ids
    for _ in range(4):
        with torch.no_grad():
            logits = model(sequence, torch.ones_like(sequence), prefix=infix).logits
        sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(generated, sequence)
