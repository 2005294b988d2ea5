"""Export to and import from PEFT's prefix-tuning format, checked with PEFT itself."""

import copy

import pytest
import torch
from peft import PeftModel, PrefixTuningConfig, get_peft_model

from prefixlab.engine.export import PrefixFormatError
from prefixlab.engine.parameterization import FlatPrefix
from prefixlab.engine.peft_format import load_peft_prefix, save_peft_prefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM

from .conftest import build_lm


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_exported_peft_adapter_loads_in_peft_with_equal_logits(tmp_path, family):
    base = build_lm(family)
    reference = copy.deepcopy(base)
    ours = PrefixedCausalLM(base, FlatPrefix(PrefixedCausalLM(copy.deepcopy(base)).geometry, 4, init_std=1.0))
    save_peft_prefix(tmp_path / "peft", ours.prefix_encoder(), ours.geometry, "tiny")
    peft_model = PeftModel.from_pretrained(reference, tmp_path / "peft").eval()
    ids = torch.randint(1, 101, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.allclose(peft_model(input_ids=ids, attention_mask=mask).logits, ours(ids, mask).logits, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_peft_trained_adapter_imports_with_equal_logits(tmp_path, family):
    base = build_lm(family)
    peft_model = get_peft_model(copy.deepcopy(base), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.normal_()
    peft_model.save_pretrained(tmp_path / "from_peft")
    ours = PrefixedCausalLM(base)
    prefix = load_peft_prefix(tmp_path / "from_peft", ours.geometry)
    ids = torch.randint(1, 101, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.allclose(peft_model.eval()(input_ids=ids, attention_mask=mask).logits, ours(ids, mask, prefix=prefix).logits, atol=1e-5)


def test_peft_adapter_for_another_geometry_is_rejected(tmp_path):
    small = build_lm("llama")
    peft_model = get_peft_model(copy.deepcopy(small), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    peft_model.save_pretrained(tmp_path / "a")
    other = PrefixedCausalLM(build_lm("gpt2"))
    with pytest.raises(PrefixFormatError, match="do not fit the model's geometry"):
        load_peft_prefix(tmp_path / "a", other.geometry)
