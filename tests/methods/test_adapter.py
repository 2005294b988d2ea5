"""method=adapter: bottleneck adapters on a frozen decoder-only LM (the paper's ADAPTER baseline)."""

import copy
import json
import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
import tiny_models
from transformers import BartConfig

from prefixlab.config import ConfigError, TrainConfig, validate
from prefixlab.engine.bottleneck_adapters import (
    CHILD, AdapterError, attach_adapters, bottleneck_for_percent, lm_parameter_count, load_adapters,
    parameters_per_adapter,
)
from prefixlab.methods import MethodNotSupportedError, check_method_fits_model
from prefixlab.methods.bottleneck import AdapterOptions
from prefixlab.methods.prefix import PrefixOptions
from prefixlab.tasks.bbc_news import BBCHeadlineOptions
from prefixlab.training.lm_module import PrefixTuningModule

from tests.pipeline.helpers import GENERATION, OPTIM, PREFIX_METHOD, TINY_CLI, TINY_MODEL

ADAPTER_METHOD = {**PREFIX_METHOD, "name": "adapter", "mid_dim": None, "bottleneck": 4, "adapter_params_percent": None,
                  "adapter_placement": "ffn"}


def build_lm(family: str) -> torch.nn.Module:
    """The shared tiny LM with 64 positions and the configs' default special tokens (no pad)."""
    if family == "llama":
        return tiny_models.build_lm("llama", run_to_max_new_tokens=False, max_position_embeddings=64, pad_token_id=None)
    return tiny_models.build_lm("gpt2", run_to_max_new_tokens=False, n_positions=64, bos_token_id=50256,
                                eos_token_id=50256, pad_token_id=None)


def _logits(lm, ids):
    with torch.no_grad():
        return lm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("placement", ["ffn", "houlsby"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_zero_up_projection_gives_exactly_the_base_models_output(family, placement):
    lm = build_lm(family)
    ids = torch.randint(3, 101, (2, 9))
    base = _logits(lm, ids)
    adapters = attach_adapters(lm, bottleneck=5, placement=placement)
    assert len(adapters) == 2 * (2 if placement == "houlsby" else 1)
    assert torch.equal(_logits(lm, ids), base)
    # ...and the adapters are in the forward path: a non-zero up-projection changes the output
    with torch.no_grad():
        adapters[-1].up.weight.normal_(std=0.5)
    assert not torch.allclose(_logits(lm, ids), base)


@pytest.mark.parametrize("placement", ["ffn", "houlsby"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_parameter_count_matches_the_formula(family, placement):
    lm = build_lm(family)
    lm_params = lm_parameter_count(lm)
    attach_adapters(lm, bottleneck=7, placement=placement)
    sites = 2 * (2 if placement == "houlsby" else 1)
    added = sum(p.numel() for n, p in lm.named_parameters() if CHILD in n)
    assert added == sites * (2 * 32 * 7 + 7 + 32) == sites * parameters_per_adapter(32, 7)
    assert lm_parameter_count(lm) == lm_params  # the LM's own count is unchanged


@pytest.mark.parametrize("percent", [0.1, 3.0, 10.0])
def test_percent_sizing_lands_within_half_a_bottleneck_step(percent):
    lm = build_lm("llama")
    lm_params = lm_parameter_count(lm)
    adapters = attach_adapters(lm, params_percent=percent)
    added = sum(p.numel() for a in adapters for p in a.parameters())
    r = adapters[0].down.out_features
    assert r == bottleneck_for_percent(percent, lm_params, 32, 2)
    if r > 1:  # r = 1 is the floor, whatever the budget
        assert abs(added - percent / 100 * lm_params) <= len(adapters) * (2 * 32 + 1) / 2


def test_paper_sizes_on_smollm2_and_gpt2_medium():
    # ADAPTER(3%) / (0.1%) widths from the published parameter counts and shapes
    assert bottleneck_for_percent(3.0, 134_515_008, 576, 30) == 116
    assert bottleneck_for_percent(0.1, 134_515_008, 576, 30) == 3
    assert bottleneck_for_percent(3.0, 354_823_168, 1024, 24) == 216
    assert bottleneck_for_percent(0.1, 354_823_168, 1024, 24) == 7


def test_attaching_twice_and_encoder_decoders_are_refused():
    lm = build_lm("gpt2")
    attach_adapters(lm, bottleneck=2)
    with pytest.raises(AdapterError, match="already"):
        attach_adapters(lm, bottleneck=2)
    with pytest.raises(MethodNotSupportedError, match="decoder-only"):
        check_method_fits_model(ADAPTER_METHOD, BartConfig())


def _module(method=ADAPTER_METHOD):
    return PrefixTuningModule(
        model=TINY_MODEL, method=method, optim=OPTIM, generation=GENERATION, task_name="bbc_headline", max_steps=3
    )


def _batch():
    from prefixlab.data.datamodule import TaskDataModule

    dm = TaskDataModule("bbc_headline", TINY_MODEL["name_or_path"], max_source_tokens=48, train_size=12, val_size=4,
                        test_size=4, batch_size=4, eval_batch_size=4)
    dm.setup("fit")
    return dm, next(iter(dm.train_dataloader()))


def test_only_adapter_parameters_get_gradients_and_counts_add_up():
    module = _module()
    _, batch = _batch()
    module.training_step(batch, 0).backward()
    adapter_names = [n for n, _ in module.named_parameters() if CHILD in n]
    assert len(adapter_names) == 2 * 4  # 2 layers x (down, up) x (weight, bias)
    for name, param in module.named_parameters():
        if CHILD not in name:
            assert param.grad is None and not param.requires_grad, name
        elif ".up." in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:  # W_up = 0 at init: the down-projection's first gradient is exactly zero
            assert param.grad is not None and param.grad.abs().sum() == 0, name
    counts = module.parameter_counts()
    assert counts["trainable_params"] == 2 * parameters_per_adapter(64, 4)
    assert counts["total_params"] == counts["lm_params"] + counts["trainable_params"]


def test_lm_bit_identical_after_training_adapters_changed_checkpoint_and_export(tmp_path):
    pl.seed_everything(0)
    module = _module()
    dm, _ = _batch()
    lm_before = {k: v.clone() for k, v in module.prefixed.lm.state_dict().items() if CHILD not in k}
    adapters_before = {k: v.clone() for k, v in module.prefixed.lm.state_dict().items() if CHILD in k}
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    after = module.prefixed.lm.state_dict()
    for name, tensor in lm_before.items():
        assert torch.equal(after[name], tensor), f"frozen LM weight {name} changed"
    for name, tensor in adapters_before.items():
        assert not torch.equal(after[name], tensor), f"adapter tensor {name} did not train"

    # the checkpoint keeps the adapters (trainable, inside the LM) and drops the frozen LM
    checkpoint = {"state_dict": copy.copy(module.state_dict())}
    module.on_save_checkpoint(checkpoint)
    assert sorted(checkpoint["state_dict"]) == sorted(f"prefixed.lm.{k}" for k in adapters_before)
    torch.manual_seed(0)  # the same random tiny LM as above (load_lm does not seed)
    fresh = _module()
    fresh.load_state_dict(checkpoint["state_dict"], strict=False)
    ids = torch.randint(3, 1000, (2, 7))
    assert torch.equal(_logits(fresh.prefixed.lm, ids), _logits(module.prefixed.lm, ids))

    # export: safetensors + JSON, reloadable onto the base model
    out = module.export(tmp_path / "trained")
    info = json.loads((out / "adapter_config.json").read_text())
    assert info["bottleneck"] == 4 and info["placement"] == "ffn" and info["adapters"] == 2
    assert info["parameters"] == 2 * parameters_per_adapter(64, 4) and info["base_model"] == TINY_MODEL["name_or_path"]
    with pytest.raises(AdapterError, match="already"):
        load_adapters(out, module.prefixed.lm)
    base = copy.deepcopy(module.prefixed.lm)  # the frozen LM without its adapters and hooks
    for name in [n for n, _ in base.named_modules() if n.endswith(CHILD)]:
        parent = base.get_submodule(name.rsplit(".", 1)[0])
        delattr(parent, CHILD)
        parent._forward_hooks.clear()
    assert not torch.equal(_logits(base, ids), _logits(module.prefixed.lm, ids))
    load_adapters(out, base)
    assert torch.equal(_logits(base, ids), _logits(module.prefixed.lm, ids))


def _method_cfg(**method):
    cfg = TrainConfig(method=AdapterOptions(name="adapter", bottleneck=64), task=BBCHeadlineOptions(name="bbc_headline"))
    cfg.logger.csv = True  # conf/logger/csv.yaml's choice: the bare schema turns no logger on
    if method.get("name") == "prefix":  # another family: its own schema (PrefixOptions has no adapter keys)
        cfg.method = PrefixOptions(name="prefix")
    for key, value in method.items():
        setattr(cfg.method, key, value)
    return cfg


@pytest.mark.parametrize(
    "method, key",
    [
        ({"bottleneck": None, "adapter_params_percent": None}, "method.bottleneck"),
        ({"bottleneck": 8, "adapter_params_percent": 3.0}, "method.bottleneck"),
        ({"bottleneck": 0}, "method.bottleneck=0"),
        ({"bottleneck": None, "adapter_params_percent": 0.0}, "method.adapter_params_percent=0.0"),
        ({"bottleneck": None, "adapter_params_percent": 101.0}, "method.adapter_params_percent=101.0"),
        ({"bottleneck": 8, "adapter_placement": "everywhere"}, "method.adapter_placement='everywhere'"),
        ({"name": "prefix", "mid_dim": 512, "bottleneck": 8}, "method.bottleneck=8 is not a key of method=prefix"),
    ],
)
def test_bad_adapter_settings_fail_validation(method, key):
    with pytest.raises(ConfigError, match=key.replace("(", r"\(").replace("[", r"\[")):
        validate(_method_cfg(**method))


def test_good_adapter_settings_pass_validation():
    validate(_method_cfg(bottleneck=8))
    validate(_method_cfg(bottleneck=None, adapter_params_percent=0.1, adapter_placement="houlsby"))


@pytest.mark.cli
def test_cli_trains_and_exports_an_adapter(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    args = [a for a in TINY_CLI if not a.startswith(("method.", "trainer.max_steps"))]
    result = subprocess.run(
        [sys.executable, "-m", "prefixlab.cli.train", *args, "method=adapter_0p1pct", "trainer.max_steps=2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "outputs").glob("*/*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 2
    info = json.loads((run_dir / "trained" / "adapter_config.json").read_text())
    assert info["parameters"] == metrics["trainable_params"]
    assert (run_dir / "trained" / "adapter_weights.safetensors").is_file()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["state_dict"] and all(CHILD in k for k in checkpoint["state_dict"])
