"""One real `prefixlab-train` run of a new task on the tiny random model: its metrics and predictions."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The tiny-model overrides shared with tests/pipeline (loaded by path: test folders are separate packages).
_spec = importlib.util.spec_from_file_location("pipeline_helpers", Path(__file__).parents[1] / "pipeline" / "helpers.py")
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
TINY_CLI = _helpers.TINY_CLI


def run_cli(args, cwd, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "prefixlab.cli.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.cli
def test_country_qa_runs_through_the_cli_with_its_metrics(tmp_path):
    # optimized_metric: val/${task.primary_metric}, val/exact_match here: the run returns it from metrics.json
    result = run_cli(["task=country_qa", *TINY_CLI, "trainer.max_steps=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "chooses hyperparameters by a test metric" not in result.stderr
    (run_dir,) = sorted((tmp_path / "outputs").glob("*/*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val/exact_match", "test/exact_match", "test/f1", "test/zero_shot_f1"):
        assert key in metrics, key
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["input"].endswith("?") and r["references"] for r in rows)


def test_every_task_config_composes_and_validates():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from prefixlab.config import register_configs, validate
    from prefixlab.tasks import TASKS
    from prefixlab.cli.train import CONFIG_DIR

    register_configs()
    expected = {"xsum": (6, 0.8, 512), "cnn_dailymail": (6, 0.8, 512), "sst2": (1, 1.0, 96), "ag_news": (1, 1.0, 128),
                "webnlg": (1, 1.0, 128)}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for name, (beams, penalty, source) in expected.items():
            settings = OmegaConf.to_object(compose(config_name="train", overrides=[f"task={name}"]))
            validate(settings)
            assert settings.task.name == name and name in TASKS
            assert (settings.generation.num_beams, settings.generation.length_penalty, settings.task.max_source_tokens) == (beams, penalty, source)
            assert settings.task.test_size is not None and settings.task.test_size <= 200  # bounded for a CPU run
            assert f"val/{settings.task.primary_metric}" == settings.optimized_metric  # validation selects
            assert settings.task.primary_metric in TASKS[name]().metric_names


@pytest.mark.cli
def test_webnlg_seen_categories_run_through_the_cli_with_meteor_and_cider(tmp_path):
    import datasets

    def rows(categories, start, n):
        return [{"category": c, "modified_triple_sets": {"mtriple_set": [[f"{c}_{i} | country | Land_{i}"]]},
                 "lex": {"comment": ["good", "good"], "lid": ["Id1", "Id2"], "lang": ["", ""],
                         "text": [f"{c} {i} is in Land {i}.", f"Land {i} has {c} {i}."]}}
                for c in categories for i in range(start, start + n)]

    data = tmp_path / "webnlg"
    data.mkdir()
    for split, split_rows in (("train", rows(["Airport", "City"], 0, 10)), ("dev", rows(["Airport"], 20, 4)),
                              ("test", rows(["Airport", "Athlete"], 30, 4))):
        datasets.Dataset.from_list(split_rows).to_json(str(data / f"{split}.jsonl"))
    result = run_cli(["task=webnlg", *TINY_CLI, "trainer.max_steps=2", f"task.data_dir={data}", "task.test_categories=seen"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = sorted((tmp_path / "outputs").glob("*/*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test/bleu", "test/nist", "test/meteor", "test/rougeL", "test/cider", "test/zero_shot_meteor"):
        assert key in metrics, key
    assert 0.0 <= metrics["test/meteor"] <= 100.0 and 0.0 <= metrics["test/cider"] <= 10.0
    rows_out = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows_out) == 4 and all(r["input"].startswith("Airport ") and len(r["references"]) == 2 for r in rows_out)
