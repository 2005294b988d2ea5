"""Upper limits refused with one line before any weights load (adversarial review: these ran for
hours, tried 256 GB allocations, failed after training, or hung)."""

import pytest
from omegaconf import OmegaConf

from prefixlab.config import ConfigError, TrainConfig
from prefixlab.methods.finetune import TopLayersOptions
from prefixlab.methods.prefix import PrefixOptions
from prefixlab.tasks.bbc_news import BBCHeadlineOptions
from prefixlab.training.limits import check_limits
from prefixlab.training.model_loading import load_config

SMOLLM2 = "embedded:smollm2-135m-instruct"
BUDGET = 8 * 2**30


def settings(**changes) -> TrainConfig:
    # the default method and task (compose gives these from conf/method/prefix.yaml and conf/task/bbc_headline.yaml)
    cfg = OmegaConf.structured(TrainConfig(method=PrefixOptions(name="prefix", mid_dim=512),
                                           task=BBCHeadlineOptions(name="bbc_headline")))
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return OmegaConf.to_object(cfg)


@pytest.fixture(scope="module")
def smollm2():
    return load_config(SMOLLM2)  # the config only: no weights


def test_the_defaults_pass(smollm2):
    check_limits(settings(), smollm2, budget=BUDGET)


@pytest.mark.parametrize("changes, message", [
    ({"generation.max_new_tokens": 1_000_000}, r"generation.max_new_tokens=1000000 is out of range: .* need 1000128 positions, "
                                               r"and the model has 8192; use at most 8064"),
    ({"generation.num_beams": 1_000_000}, r"generation.num_beams=1000000 is out of range: .* decoding cache needs about"),
    ({"method.mlp_layers": 1_000_000}, r"method.mid_dim=512 with method.mlp_layers=1000000 is out of range"),
    ({"method.mid_dim": 1_000_000_000}, r"method.mid_dim=1000000000 .* is out of range: .* over this machine's budget"),
    ({"trainer.num_nodes": 2}, r"trainer.num_nodes=2 is out of range here: .* wait forever"),
    ({"trainer.strategy": "deepspeed"}, r"trainer.strategy=deepspeed needs the deepspeed package"),
    ({"method": TopLayersOptions(name="finetune_topk", k=1000)}, r"method.k=1000 is out of range: the model has 30 layers"),
    ({"method": TopLayersOptions(name="finetune_topk", k=3), "model.config_overrides": {"num_hidden_layers": 2}},
     r"method.k=3 is out of range: the model has 2 layers"),
])
def test_too_large_values_are_one_line_naming_the_key(smollm2, monkeypatch, changes, message):
    for name in ("SLURM_NTASKS", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=message) as error:
        check_limits(settings(**changes), smollm2, budget=BUDGET)
    assert "\n" not in str(error.value)


def test_a_gpu_accelerator_without_a_gpu_is_one_line(smollm2):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the refusal is for machines without one")
    with pytest.raises(ConfigError, match=r"trainer.accelerator=gpu is out of range here: no CUDA GPU"):
        check_limits(settings(**{"trainer.accelerator": "gpu"}), smollm2, budget=BUDGET)


@pytest.mark.cli
def test_the_cli_refuses_before_any_weights_load(tmp_path):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "prefixlab.cli.train", "model=tiny_random", "generation.max_new_tokens=1000000",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"})
    assert done.returncode == 1
    assert "prefixlab-train: error: generation.max_new_tokens=1000000 is out of range" in done.stderr
    assert "Traceback" not in done.stderr and "Loading weights" not in done.stderr
