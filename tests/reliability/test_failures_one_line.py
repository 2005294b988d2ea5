"""Failures that ended in a traceback (issue 19): nonsense `model.config_overrides`, running out
of memory, a full disk. Each is one line; the ones during a run leave `status: failed` and the
step of the last checkpoint in metrics.json, and no earlier file damaged."""

import errno
import json
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pipeline.test_config import compose_train
from prefixlab.config import ConfigError
from prefixlab.training.limits import check_config_overrides, check_limits
from prefixlab.training.model_loading import load_config

from .conftest import RUN_CLI

SMOLLM2 = "embedded:smollm2-135m-instruct"
THREE_STEPS = [a for a in RUN_CLI if not a.startswith("trainer.max_steps=")] + ["trainer.max_steps=3"]


@pytest.fixture(scope="module")
def smollm2():
    return load_config(SMOLLM2)  # the config only: no weights


NONSENSE = [
    ({"num_hidden_layers": 0}, "model.config_overrides.num_hidden_layers=0 is out of range: .* at least 1"),
    ({"hidden_size": -64}, "model.config_overrides.hidden_size=-64 is out of range"),
    ({"intermediate_size": 0}, "model.config_overrides.intermediate_size=0 is out of range"),
    ({"num_hidden_layers": "two"}, "model.config_overrides.num_hidden_layers='two': .* whole number .* not str"),
    ({"num_attention_heads": 2.5}, "model.config_overrides.num_attention_heads=2.5: .* whole number .* not float"),
    ({"num_key_value_heads": 2}, "num_key_value_heads=2 does not divide num_attention_heads=9; choose .* among \\[1, 3, 9\\]"),
    ({"hidden_size": 100, "head_dim": None, "num_attention_heads": 3, "num_key_value_heads": 3},
     "num_attention_heads=3 does not divide hidden_size=100"),
    ({"attention_dropout": 1.5}, "model.config_overrides.attention_dropout=1.5 is out of range: .* between 0 and 1"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings='yes': .* true or false"),
    ({"num_hiden_layers": 2}, "model.config_overrides.num_hiden_layers=2: the llama config has no field 'num_hiden_layers'"),
]


@pytest.mark.parametrize("overrides, message", NONSENSE, ids=[str(o) for o, _ in NONSENSE])
def test_nonsense_config_overrides_are_one_config_error_before_any_weights_load(smollm2, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config_overrides(overrides, smollm2)
    settings = OmegaConf.to_object(compose_train([]))
    settings.model.config_overrides = overrides
    with pytest.raises(ConfigError, match=message):  # check_limits, which train() calls before loading weights, runs it
        check_limits(settings, smollm2, budget=8 * 2**30)


def test_the_tiny_models_overrides_are_fine(smollm2):
    check_config_overrides(dict(OmegaConf.load("conf/model/tiny_random.yaml").config_overrides), smollm2)


def run_in_process(monkeypatch, args) -> str:
    """`prefixlab-train args` in this process; the message it exits with (None for success)."""
    from hydra.core.global_hydra import GlobalHydra

    from prefixlab.cli import train

    GlobalHydra.instance().clear()
    # Hydra's job logging calls logging.config.dictConfig, which closes every handler there is,
    # pytest's own among them: every later test in this process would then fail on a closed file
    logging = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", ["prefixlab-train", *args, *logging])
    try:
        train.main()
    except SystemExit as exit_:
        return exit_.code
    return None


def test_config_overrides_nonsense_through_the_cli_is_one_line_and_loads_no_model(tmp_path, monkeypatch, capsys):
    message = run_in_process(monkeypatch, [*THREE_STEPS, f"hydra.run.dir={tmp_path / 'run'}",
                                           "model.config_overrides.num_hidden_layers=0"])
    assert message.startswith("prefixlab-train: error: model.config_overrides.num_hidden_layers=0 is out of range")
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "parameters:" not in captured.out  # printed once the model is built
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("where", ["training", "validation"])
def test_out_of_memory_is_one_line_and_failed_with_the_last_checkpoint_step(tmp_path, monkeypatch, where):
    from prefixlab.training.lm_module import PrefixTuningModule

    if where == "training":  # the third step runs out of memory: steps 1-2 done, last.ckpt at step 2
        stock = PrefixTuningModule.training_step

        def training_step(self, batch, batch_idx):
            if self.global_step == 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return stock(self, batch, batch_idx)

        monkeypatch.setattr(PrefixTuningModule, "training_step", training_step)
        step, saved = 2, 2
    else:  # generation after training: a host-memory MemoryError; last.ckpt at step 3 (training's end)
        monkeypatch.setattr(PrefixTuningModule, "generate_text", lambda self, *a, **k: (_ for _ in ()).throw(MemoryError()))
        step, saved = 3, 3
    run_dir = tmp_path / "run"
    message = run_in_process(monkeypatch, [*THREE_STEPS, f"hydra.run.dir={run_dir}"])
    assert message.startswith(f"prefixlab-train: error: out of memory at step {step} during {where}: lower task.batch_size")
    assert f"checkpoint {run_dir / 'checkpoints' / 'last.ckpt'} (step {saved}) kept" in message
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["step"] == step and metrics["last_checkpoint_step"] == saved
    assert "MemoryError" in metrics["error"]


def test_a_full_disk_while_writing_results_is_failed_and_leaves_the_earlier_results_intact(tmp_path, monkeypatch):
    import prefixlab.run.artifacts as artifacts

    run_dir = tmp_path / "run"
    assert run_in_process(monkeypatch, [*THREE_STEPS, f"hydra.run.dir={run_dir}"]) is None  # completed, steps 3
    earlier_predictions = (run_dir / "predictions.jsonl").read_bytes()

    stock_atomic_write = artifacts.atomic_write

    def full_disk_for_predictions(path, write):  # every artifact is written through atomic_write
        if Path(path).name == "predictions.jsonl":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return stock_atomic_write(path, write)

    monkeypatch.setattr(artifacts, "atomic_write", full_disk_for_predictions)  # the evaluation's predictions do not fit
    message = run_in_process(monkeypatch, [*THREE_STEPS, f"hydra.run.dir={run_dir}", "resume=auto"])
    assert message.startswith(f"prefixlab-train: error: no space left on device writing {run_dir / 'predictions.jsonl'} "
                              "at step 3")
    assert "free disk space" in message and "(step 3) kept" in message
    metrics = json.loads((run_dir / "metrics.json").read_text())  # not "completed" from the earlier run
    assert metrics["status"] == "failed" and metrics["step"] == 3 and metrics["last_checkpoint_step"] == 3
    assert "No space left on device" in metrics["error"]
    assert (run_dir / "predictions.jsonl").read_bytes() == earlier_predictions
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
