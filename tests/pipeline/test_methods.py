"""Every method on the same pipeline: what trains, what stays frozen, what is exported."""

import copy

import pytest
import pytorch_lightning as pl
import torch

from prefixlab.engine.export import load_prefix
from prefixlab.training.lm_module import PrefixTuningModule

from .helpers import GENERATION, OPTIM, TINY_MODEL, load_tiny_lm
from training.test_training_invariants import _datamodule, _trainer

BASE = {"prefix_length": 4, "mid_dim": None, "mlp_layers": 1, "dropout": 0.0, "init_std": 0.02, "init": "random",
        "init_text": "", "k": 1, "lora_r": 4, "lora_alpha": 8, "target_modules": [], "prefix_sites": None}
METHODS = {
    "prefix": {"mid_dim": 32},
    "prefix_flat": {},
    "infix": {"mid_dim": 32},
    "embedding": {},
    "finetune": {},
    "finetune_topk": {},
    "lora": {},
    "ia3": {},
}


def _module(name):
    method = {**BASE, **METHODS[name], "name": name}
    return PrefixTuningModule(model=TINY_MODEL, method=method, optim=OPTIM, generation=GENERATION,
                              task_name="bbc_headline", max_steps=2)


@pytest.mark.parametrize("name", list(METHODS))
def test_method_trains_only_its_parameters_and_exports(tmp_path, name):
    pl.seed_everything(0)
    module = _module(name)
    before = copy.deepcopy({n: p.detach().clone() for n, p in module.named_parameters()})
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    _trainer(tmp_path, steps=2).fit(module, datamodule=_datamodule())
    for n, p in module.named_parameters():
        if n in trainable:
            continue
        assert torch.equal(p, before[n]), f"{name}: frozen {n} changed"
    assert any(not torch.equal(p, before[n]) for n, p in module.named_parameters() if n in trainable), f"{name}: nothing changed"
    counts = module.parameter_counts()
    assert counts["trainable_params"] == sum(module.state_dict()[n].numel() for n in trainable)
    out = module.export(tmp_path / "export")
    assert any(out.iterdir())
    if name in ("prefix", "prefix_flat", "infix", "embedding"):
        exported = load_prefix(out)
        assert exported.method == name
        assert counts["exported_params"] == sum(p.keys.numel() * 2 for p in exported.activations.sites.values())


def test_finetune_topk_trains_exactly_the_top_layers():
    module = _module("finetune_topk")
    lm = module.prefixed.lm
    assert all(p.requires_grad for p in lm.model.layers[-1].parameters())
    assert not any(p.requires_grad for p in lm.model.layers[0].parameters())
    assert not lm.get_input_embeddings().weight.requires_grad  # tied head stays frozen


def test_lora_export_loads_in_peft_with_equal_logits(tmp_path):
    from peft import PeftModel


    torch.manual_seed(0)
    module = _module("lora")
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter do something
        for n, p in module.prefixed.lm.named_parameters():
            if "lora_B" in n:
                p.normal_()
    module.export(tmp_path / "lora")
    base = load_tiny_lm()
    # the same random base weights (LoRA wraps each target Linear as `<name>.base_layer`)
    plain = {k.replace(".base_layer", ""): v for k, v in module.prefixed.lm.state_dict().items() if "lora_" not in k}
    base.load_state_dict(plain, strict=True)
    peft_model = PeftModel.from_pretrained(base, tmp_path / "lora").eval()
    ids = torch.randint(5, 1000, (2, 6))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = module.prefixed(ids, mask, prefix=None).logits
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_text_init_starts_from_the_words_activations():
    from prefixlab.engine.initialization import init_token_ids, word_activations
    from prefixlab.engine.parameterization import site_prefix_to_rows

    method = {**BASE, "name": "prefix", "mid_dim": 32, "init": "text", "init_text": "summarize the news"}
    module = PrefixTuningModule(model=TINY_MODEL, method=method, optim=OPTIM, generation=GENERATION,
                                task_name="bbc_headline", max_steps=1)
    ids = init_token_ids(module.tokenizer, "summarize the news", 4)
    expected = word_activations(module.prefixed.lm, ids).sites["decoder_self"]
    produced = module.prefixed.prefix_encoder().sites["decoder_self"]
    assert torch.allclose(site_prefix_to_rows(produced.keys[:, 0], produced.values[:, 0]),
                          site_prefix_to_rows(expected.keys[:, 0], expected.values[:, 0]), atol=1e-4)


def test_methods_that_do_not_fit_the_model_fail_before_loading():
    from transformers import BartConfig, BertConfig, LlamaConfig, MambaConfig

    from prefixlab.engine.families import UnsupportedModelError
    from prefixlab.methods import MethodNotSupportedError, check_method_fits_model

    with pytest.raises(MethodNotSupportedError, match="method=infix does not apply to model type 'bert', an encoder"):
        check_method_fits_model({**BASE, "name": "infix"}, BertConfig())
    check_method_fits_model({**BASE, "name": "prefix"}, BertConfig())  # P-tuning v2 prefix + head (encoder_module)
    with pytest.raises(MethodNotSupportedError, match="method=head trains a task head on a frozen encoder"):
        check_method_fits_model({**BASE, "name": "head"}, LlamaConfig())
    with pytest.raises(MethodNotSupportedError, match="method=infix is implemented for decoder-only models"):
        check_method_fits_model({**BASE, "name": "infix"}, BartConfig())
    with pytest.raises(MethodNotSupportedError, match="method.init=text"):
        check_method_fits_model({**BASE, "name": "prefix", "init": "text"}, BartConfig())
    with pytest.raises(MethodNotSupportedError, match=r"\['cross'\] do not exist in a 'llama' model"):
        check_method_fits_model({**BASE, "name": "prefix", "prefix_sites": ["cross"]}, LlamaConfig())
    with pytest.raises(UnsupportedModelError, match="'mamba' has no prefix adapter"):
        check_method_fits_model({**BASE, "name": "prefix"}, MambaConfig())
    check_method_fits_model({**BASE, "name": "prefix", "prefix_sites": ["encoder_self", "cross"]}, BartConfig())
