"""One real `prefixlab-train` run of a new task on the tiny random model: its metrics and predictions."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

# The tiny-model overrides shared with tests/pipeline (loaded by path: test folders are separate packages).
_spec = importlib.util.spec_from_file_location("pipeline_helpers", Path(__file__).parents[1] / "pipeline" / "helpers.py")
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
TINY_CLI = _helpers.TINY_CLI


def run_cli(args, cwd, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "prefixlab.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_country_qa_runs_through_the_cli_with_its_metrics(tmp_path):
    # optimized_metric: train.yaml fixes test/rougeL, which a QA task does not report
    result = run_cli(["task=country_qa", *TINY_CLI, "trainer.max_steps=2", "optimized_metric=test/exact_match"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = sorted((tmp_path / "outputs").glob("*/*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val/exact_match", "test/exact_match", "test/f1", "test/zero_shot_f1"):
        assert key in metrics, key
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["input"].endswith("?") and r["references"] for r in rows)
