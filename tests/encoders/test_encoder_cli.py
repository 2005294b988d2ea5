"""`prefixlab-train` on encoders through the real CLI (tiny random MiniLM-shaped encoder, 3 steps):
classification and extractive QA write metrics.json, predictions.jsonl, the export and a checkpoint
without the frozen encoder; squad runs from released files for an encoder and for an LM; bad
inputs are one line before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prefixlab.engine.export import load_prefix

from .squad_files import write_squad

pytestmark = pytest.mark.cli  # the real CLI in subprocesses: `make test-fast` skips these

TINY = ["model=tiny_random_encoder", "trainer.max_steps=3", "trainer.enable_progress_bar=false", "task.train_size=16",
        "task.val_size=4", "task.test_size=6", "task.batch_size=4", "task.eval_batch_size=4"]


def run_cli(args, cwd, env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([sys.executable, "-m", "prefixlab.cli.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def completed_run(args, cwd) -> Path:
    result = run_cli(args, cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = sorted((cwd / "outputs").glob("*/*"))
    assert str(run_dir) in result.stdout
    return run_dir


def results(run_dir: Path) -> tuple[dict, list[dict]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return metrics, rows


def assert_checkpoint_has_no_frozen_encoder(run_dir: Path, head: str) -> None:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any(k.startswith("prefixed.model.bert.") for k in state)
    assert f"prefixed.model.{head}.weight" in state


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cls")
    return completed_run(TINY + ["task=bbc_topic", "task.max_source_tokens=32", "method=prefix", "method.mid_dim=16",
                                 "method.prefix_length=3"], cwd)


def test_classification_run_writes_metrics_predictions_export_and_checkpoint(classification_run):
    metrics, rows = results(classification_run)
    assert metrics["status"] == "completed" and metrics["steps"] == 3
    for key in ("test/accuracy", "test/macro_f1", "val/accuracy", "test/loss", "runtime_s"):
        assert key in metrics, key
    assert metrics["trainable_params"] < metrics["lm_params"] < metrics["total_params"]
    assert metrics["exported_params"] == 2 * 2 * 3 * 32 + metrics["head_params"]  # K,V x layers x length x hidden + head
    assert metrics["head_params"] == 32 * 5 + 5
    labels = {"business", "entertainment", "politics", "sports", "tech"}
    assert len(rows) == 6 and all(r["prediction"] in labels and r["references"][0] in labels for r in rows)
    correct = sum(r["prediction"] == r["references"][0] for r in rows)
    assert metrics["test/accuracy"] == pytest.approx(100 * correct / 6)  # the metric is computed from these rows
    export = classification_run / "prefix"
    assert load_prefix(export).activations.sites["encoder_self"].keys.shape == (2, 1, 4, 3, 8)
    head = json.loads((export / "head_config.json").read_text())
    assert head["labels"] == ["business", "entertainment", "politics", "sports", "tech"] and head["kind"] == "classification"
    assert_checkpoint_has_no_frozen_encoder(classification_run, "classifier")


def test_resume_auto_continues_an_encoder_run(classification_run, tmp_path):
    """The trainable-state check of ``resume`` works for the encoder checkpoint (no frozen weights in it)."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(classification_run, run_dir)
    args = TINY + ["task=bbc_topic", "task.max_source_tokens=32", "method=prefix", "method.mid_dim=16",
                   "method.prefix_length=3", "trainer.max_steps=5", f"hydra.run.dir={run_dir}", "resume=auto",
                   "resume_allow_changes=[trainer.max_steps]"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout and "(step 3)" in result.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 5


def test_extractive_country_qa_run(tmp_path):
    run_dir = completed_run(TINY + ["task=country_qa_extractive", "method=prefix_flat", "method.prefix_length=2"], tmp_path)
    metrics, rows = results(run_dir)
    assert {"test/exact_match", "test/f1", "val/exact_match", "val/f1"} <= metrics.keys()
    for row in rows:  # a span of the context, never of the question
        question, context = row["input"].split("\n", 1)
        assert row["prediction"] and row["prediction"] in context
    assert (run_dir / "prefix" / "prefix.safetensors").is_file() and (run_dir / "prefix" / "head.safetensors").is_file()
    assert_checkpoint_has_no_frozen_encoder(run_dir, "qa_outputs")


def test_squad_from_released_files_head_only_on_an_encoder(tmp_path):
    data = write_squad(tmp_path / "squad")
    run_dir = completed_run(TINY + ["task=squad", f"task.data_dir={data}", "method=head"], tmp_path)
    metrics, rows = results(run_dir)
    assert {"test/exact_match", "test/f1"} <= metrics.keys() and len(rows) == 4  # the 2 dev articles' 4 questions
    assert metrics["trainable_params"] == metrics["head_params"] == metrics["exported_params"] == 2 * 32 + 2
    assert sorted(p.name for p in (run_dir / "trained").iterdir()) == ["README.md", "head.safetensors", "head_config.json"]  # + the model card


def test_squad_is_generative_on_an_lm(tmp_path):
    data = write_squad(tmp_path / "squad")
    lm = [a.replace("tiny_random_encoder", "tiny_random") for a in TINY if not a.startswith("trainer.max_steps")]
    run_dir = completed_run(lm + ["task=squad", f"task.data_dir={data}", "trainer.max_steps=2", "method.mid_dim=16",
                                  "generation.max_new_tokens=4", "eval_zero_shot=false"], tmp_path)
    metrics, rows = results(run_dir)
    assert {"test/exact_match", "test/f1"} <= metrics.keys()
    river = next(r for r in rows if r["id"].endswith("-river"))
    assert river["input"].startswith("Question: Which river") and len(river["references"]) == 2


@pytest.mark.parametrize(
    "args, expected",
    [
        (["method=infix"], "method=infix does not apply to model type 'bert', an encoder"),
        (["task=squad"], "could not load 'rajpurkar/squad'"),  # offline, nothing cached
    ],
)
def test_bad_input_is_one_line_before_any_model_loads(args, expected, tmp_path):
    result = run_cli(TINY + args, tmp_path, env={"HF_DATASETS_CACHE": str(tmp_path / "empty_cache")})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and lines[-1].startswith("prefixlab-train: error: ")
    assert expected in lines[-1]
    assert "parameters:" not in result.stdout  # the run summary, printed only once model and trainer are built


def test_data_errors_come_from_the_datamodule_before_the_encoder_loads(tmp_path):
    """The other bad inputs, in process (the CLI turns any DataError into its one line, as above):
    EncoderDataModule is built and set up before EncoderTaskModule loads any weights."""
    from prefixlab.data.encoder_data import EncoderDataModule
    from prefixlab.training.model_loading import MINILM
    from prefixlab.tasks import DataError

    with pytest.raises(DataError, match="task 'country_qa' generates text, which an encoder cannot do"):
        EncoderDataModule("country_qa", MINILM)  # the constructor: nothing is loaded yet
    bad = write_squad(tmp_path / "bad", bad_answer_start=True)
    datamodule = EncoderDataModule("squad", MINILM, task_options={"data_dir": str(bad)})
    with pytest.raises(DataError, match="example 'train0-colour': answer 'blue' is not in its context at character 2"):
        datamodule.setup("fit")
