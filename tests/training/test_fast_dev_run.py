"""trainer.fast_dev_run and trainer.limit_val_batches / limit_test_batches (issue 18): Lightning's
meanings, through the real entry point in this process on the tiny model. A smoke test writes no
export and no predictions, and its metrics.json says fast_dev_run, so it never passes for a result."""

import json

from pipeline.helpers import TINY_CLI
from pipeline.helpers import train_in_process as run_train


def test_fast_dev_run_runs_one_batch_of_each_split_and_leaves_nothing_that_looks_like_a_result(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    assert run_train(monkeypatch, [*TINY_CLI, "eval_zero_shot=false", "trainer.fast_dev_run=true",
                                   f"hydra.run.dir={run_dir}"]) is None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "fast_dev_run"
    assert metrics["steps"] == 1  # TINY_CLI asks for 3: fast_dev_run's one batch wins, as in Lightning
    assert "exported_checkpoint" not in metrics
    assert not (run_dir / "prefix").exists() and not (run_dir / "predictions.jsonl").exists()
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()


def test_limit_test_batches_bounds_the_generated_test_predictions(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    # 8 test examples in batches of 4: one batch is 4 generated rows
    args = [a for a in TINY_CLI if not a.startswith(("task.test_size=", "task.val_size="))]
    assert run_train(monkeypatch, [*args, "task.val_size=8", "task.test_size=8", "eval_zero_shot=false",
                                   "trainer.max_steps=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                                   f"hydra.run.dir={run_dir}"]) is None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    rows = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 4


def test_a_fraction_above_one_is_refused_in_one_line(tmp_path, monkeypatch):
    message = run_train(monkeypatch, [*TINY_CLI, "trainer.limit_val_batches=1.5", f"hydra.run.dir={tmp_path / 'run'}"])
    assert message.startswith("prefixlab-train: error: trainer.limit_val_batches=1.5 is out of range"), message
