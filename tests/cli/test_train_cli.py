"""The real `prefixlab-train` CLI on the tiny random model: run directory, results, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefixlab.engine.export import load_prefix

from pipeline.helpers import TINY_CLI

pytestmark = pytest.mark.cli  # the real CLI in subprocesses: `make test-fast` skips these

REPO = Path(__file__).resolve().parents[2]


def run_cli(args, cwd, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "prefixlab.cli.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    result = run_cli(TINY_CLI, cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = sorted((cwd / "outputs").glob("*/*"))
    assert len(run_dirs) == 1
    return run_dirs[0], result


def test_run_writes_config_metrics_predictions_and_prefix(tiny_run):
    run_dir, result = tiny_run
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 3
    for key in ("val/rougeL", "test/rougeL", "test/zero_shot_rougeL", "trainable_params", "total_params", "lm_params"):
        assert key in metrics, key
    assert metrics["trainable_params"] < metrics["lm_params"] < metrics["total_params"]
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"input", "prediction", "references"} <= rows[0].keys()
    exported = load_prefix(run_dir / "prefix")
    assert exported.prefix_length == 4 and exported.method == "prefix"
    assert exported.activations.sites["decoder_self"].keys.shape == (2, 1, 2, 4, 16)
    assert str(run_dir) in result.stdout  # tells the user where the results are


def test_checkpoint_excludes_the_frozen_lm(tiny_run):
    import torch

    run_dir, _ = tiny_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any(k.startswith("prefixed.lm.") for k in checkpoint["state_dict"])


def test_two_runs_started_together_get_distinct_directories(tmp_path):
    args = TINY_CLI + ["trainer.max_steps=1", "eval_zero_shot=false"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "prefixlab.cli.train", *args], cwd=tmp_path,
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    run_dirs = sorted((tmp_path / "outputs").glob("*/*"))
    assert len(run_dirs) == 2
    assert all((d / "metrics.json").is_file() for d in run_dirs)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["model.name_or_path=/nonexistent/model"], "model.name_or_path='/nonexistent/model'"),
        (["model.name_or_path='not a model!'"], "neither a local model folder nor a Hugging Face model id"),
        (["method.prefix_length=0"], "method.prefix_length=0"),
        (["method.prefix_length=-2"], "method.prefix_length=-2"),
    ],
)
def test_bad_input_is_one_clear_line_before_any_model_loads(tmp_path, args, expected):
    result = run_cli(args, tmp_path, timeout=120)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "Loading weights" not in result.stderr + result.stdout


def test_unknown_method_and_task_fail_with_the_options(tmp_path):
    for args, group, an_option in ((["method=nope"], "method", "prefix"), (["task=nope"], "task", "bbc_headline")):
        result = run_cli(args, tmp_path, timeout=120)
        assert result.returncode != 0
        assert f"prefixlab-train: error: {group}=nope is not an option of {group} (conf/{group}/); its options: " in result.stderr
        assert "Traceback" not in result.stderr and an_option in result.stderr.rsplit("its options:", 1)[1]


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_cli(["--cfg", "job"], tmp_path, timeout=120)
    assert result.returncode == 0
    assert "name_or_path: embedded:smollm2-135m-instruct" in result.stdout
    assert "prefix_length: 10" in result.stdout


def test_wandb_logger_runs_offline_without_a_key_and_finishes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env.update({"HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"})
    result = subprocess.run(
        [sys.executable, "-m", "prefixlab.cli.train", *TINY_CLI, "trainer.max_steps=1", "eval_zero_shot=false", "logger=wandb"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "outputs").glob("*/*"))
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, "one offline W&B run per job"
    assert list(offline_runs[0].glob("*.wandb")), "the run's data file is written"
