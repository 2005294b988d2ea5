"""`prefixlab-eval` on the tiny random model: evaluating a run's checkpoint or its exported prefix
reproduces the run's own figures and predictions exactly; the bare model reproduces its zero-shot
figures; bad sources are one line before anything loads; sweeps over sources and decoding work."""

import json
import os
import subprocess
import sys

import pytest

from pipeline.helpers import EVAL_CLI, TINY_CLI

pytestmark = pytest.mark.cli  # the real CLIs in subprocesses: `make test-fast` skips these



def run(module, args, cwd, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def evaluate(args, cwd, name):
    result = run("prefixlab.cli.evaluate", [*EVAL_CLI, *args, f"hydra.run.dir={cwd / name}"], cwd)
    return result, cwd / name


def read(folder):
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()] \
        if (folder / "predictions.jsonl").is_file() else []
    return metrics, rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("eval")
    result = run("prefixlab.cli.train", [*TINY_CLI, f"hydra.run.dir={cwd / 'run'}"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, cwd / "run"


def test_a_checkpoint_scores_what_its_run_scored(trained):
    cwd, run_dir = trained
    result, folder = evaluate([f"eval.source={run_dir / 'checkpoints' / 'last.ckpt'}"], cwd, "ckpt")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics, rows = read(folder)
    run_metrics, run_rows = read(run_dir)
    assert metrics["status"] == "completed"
    assert metrics["evaluated"] == {"source": str(run_dir / "checkpoints" / "last.ckpt"), "kind": "checkpoint",
                                    "split": "test", "checkpoint_step": 3}
    scores = {k: v for k, v in metrics.items() if k.startswith("test/") and "zero_shot" not in k}
    assert scores and scores == {k: run_metrics[k] for k in scores}
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in run_rows]


def test_an_exported_prefix_scores_what_its_run_scored_on_validation_too(trained):
    cwd, run_dir = trained
    result, folder = evaluate([f"eval.source={run_dir / 'prefix'}", "eval.split=validation"], cwd, "prefix")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics, _ = read(folder)
    run_metrics, _ = read(run_dir)
    assert metrics["evaluated"]["kind"] == "prefix" and metrics["evaluated"]["split"] == "validation"
    scores = {k: v for k, v in metrics.items() if k.startswith("val/")}
    assert "val/rougeL" in scores and scores == {k: run_metrics[k] for k in scores}


def test_the_bare_model_scores_the_runs_zero_shot_figures(trained):
    cwd, run_dir = trained
    result, folder = evaluate([], cwd, "bare")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics, _ = read(folder)
    run_metrics, _ = read(run_dir)
    assert metrics["evaluated"]["kind"] == "none" and metrics["trainable_params"] == 0
    assert metrics["test/rougeL"] == run_metrics["test/zero_shot_rougeL"]


@pytest.mark.parametrize("source, message", [
    ("{run}", "is a run folder; give its export or checkpoint"),
    ("{run}/nothing.ckpt", "no such file or folder"),
    ("{run}/.hydra", "holds no prefix_config.json"),
])
def test_a_bad_source_is_one_line_before_anything_loads(trained, source, message):
    cwd, run_dir = trained
    result, folder = evaluate([f"eval.source={source.format(run=run_dir)}"], cwd, "bad")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("prefixlab-eval: error: eval.source=")


def test_a_sweep_over_decoding_settings(trained):
    cwd, run_dir = trained
    sweep = cwd / "sweep"
    result = run("prefixlab.cli.evaluate", ["-m", *EVAL_CLI, f"eval.source={run_dir / 'prefix'}",
                                            "generation.num_beams=1,2", f"hydra.sweep.dir={sweep}"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        metrics, rows = read(sweep / job)
        assert metrics["status"] == "completed" and len(rows) == 4
