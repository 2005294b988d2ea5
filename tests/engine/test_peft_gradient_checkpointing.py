"""Regression pin: PEFT's prefix tuning refuses gradient checkpointing; prefixlab trains with it."""

import copy

import pytest
import torch
from peft import PrefixTuningConfig, get_peft_model

from prefixlab.engine.parameterization import MLPPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM

from .conftest import build_lm


def test_peft_prefix_tuning_refuses_gradient_checkpointing_but_ours_trains_with_it():
    lm = build_lm("llama")
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with pytest.raises(ValueError, match="does not work with gradient checkpointing"):
        get_peft_model(copy.deepcopy(lm), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))

    lm.train().requires_grad_(False)
    model = PrefixedCausalLM(lm)
    model.prefix_encoder = MLPPrefix(model.geometry, 4, embed_dim=32, mid_dim=16)
    ids = torch.randint(1, 101, (2, 6))
    model(ids, torch.ones_like(ids), labels=ids).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prefix_encoder.parameters())
