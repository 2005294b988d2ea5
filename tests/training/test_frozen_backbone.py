"""The LM and the encoder LightningModules share one frozen-backbone base
(``training/frozen_backbone.py``): one NaN guard, one eval mode, one checkpoint state."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from prefixlab.data.encoder_data import CLASSIFICATION
from prefixlab.training.frozen_backbone import FrozenBackboneModule
from prefixlab.training.lm_module import PrefixTuningModule
from prefixlab.training.resume import check_trainable_state

from encoders.test_encoder_module import build as build_encoder  # tests/ is on sys.path (conftest.py)
from pipeline.helpers import GENERATION, OPTIM, PREFIX_METHOD, TINY_MODEL



def _lm_module(method=PREFIX_METHOD) -> PrefixTuningModule:
    return PrefixTuningModule(model=TINY_MODEL, method=method, optim=OPTIM, generation=GENERATION,
                              task_name="bbc_headline", max_steps=2)


@pytest.fixture(scope="module", params=["lm", "encoder"])
def module(request) -> FrozenBackboneModule:
    torch.manual_seed(0)
    return _lm_module() if request.param == "lm" else build_encoder("prefix", CLASSIFICATION)


def test_a_nan_loss_stops_either_module_with_the_same_one_line_error(module, monkeypatch):
    assert isinstance(module, FrozenBackboneModule)
    monkeypatch.setattr(module, "compute_loss", lambda batch: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(FloatingPointError) as caught:
        module.training_step({"input_ids": torch.zeros(2, 3, dtype=torch.long)}, 0)
    assert str(caught.value) == "loss is nan at step 0; lower optim.lr"


def test_train_mode_leaves_the_backbone_in_eval(module):
    module.train()
    assert module.training and module.prefixed.prefix_encoder.training
    assert not any(m.training for m in module.backbone.modules())


def test_the_checkpoint_state_is_the_trainable_tensors_and_what_lies_outside_the_backbone(module):
    full = pl.LightningModule.state_dict(module)  # everything, frozen weights included
    frozen = module._backbone_key()
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    kept = {k for k in full if not k.startswith(frozen) or k in trainable}
    assert set(module.state_dict()) == kept and len(kept) < len(full)
    assert trainable <= kept
    # the same when the module is part of a larger one (torch then hands each child its parent's dict)
    parent = torch.nn.ModuleDict({"job": module})
    assert set(parent.state_dict()) == {f"job.{k}" for k in kept}


def test_a_checkpoint_written_before_the_shared_base_still_fits():
    """The LM module used to drop frozen LM weights in ``on_save_checkpoint``: the keys it wrote are
    the keys the module holds now, so such a checkpoint resumes (``check_trainable_state``)."""
    torch.manual_seed(0)
    module = _lm_module({**PREFIX_METHOD, "name": "lora"})
    full = pl.LightningModule.state_dict(module)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    old_keys = {k: tuple(v.shape) for k, v in full.items() if not k.startswith("prefixed.lm.") or k in trainable}
    assert any("lora_" in k for k in old_keys)  # adapters inside the LM are kept
    check_trainable_state("old.ckpt", old_keys, module)


def test_the_parameter_counts_add_up(module):
    counts = module.parameter_counts()
    assert counts["total_params"] == sum(p.numel() for p in module.parameters())
    assert counts["trainable_params"] == sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert counts["lm_params"] + counts["trainable_params"] == counts["total_params"]
