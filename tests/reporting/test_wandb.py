"""`logger=wandb` through the real CLI on the tiny model, read back from what offline mode writes
(wandb 0.2x+ writes no config.yaml or wandb-summary.json offline: everything is in the
``run-<id>.wandb`` transaction log, tables also in ``files/media/table/``); then the report CLI
on a real sweep with a failed job."""

import csv
import json

import pytest

from prefixlab.sweeps.jobs import read_wandb_run

from .conftest import TINY_CLI, run_module

pytestmark = pytest.mark.cli  # the real CLI in subprocesses: `make test-fast` skips these

NO_KEY = ("WANDB_MODE", "WANDB_API_KEY")  # offline must be the default, not something the test sets


def offline_run(run_dir):
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one offline W&B run per job"
    (log,) = runs[0].glob("run-*.wandb")
    return runs[0], read_wandb_run(log)


def table_file(run_folder, logged):
    return json.loads((run_folder / "files" / logged["path"]).read_text())


def test_offline_run_holds_config_summary_per_step_metrics_and_samples_tables(tmp_path):
    args = [*TINY_CLI, "logger=wandb", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
            "logger.samples_rows=3", "logger.tags=[mine]", "hydra.run.dir=run"]
    result = run_module("prefixlab.cli.train", args, tmp_path, env_drop=NO_KEY)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    folder, run = offline_run(run_dir)

    # identity: a single run is its own group; named from its overrides; tagged for filtering
    assert run["group"] == metrics["run_name"] == "bbc_headline-prefix-L4"
    assert run["name"].startswith("model=tiny_random,prefix_length=4,mid_dim=32,")
    assert run["tags"] == ["task:bbc_headline", "model:smollm2-135m-instruct-random", "method:prefix", "mine"]
    assert run["exit_code"] == 0
    # the full resolved config, and the parameter counts
    config = run["config"]
    assert config["method"]["prefix_length"] == 4 and config["task"]["train_size"] == 16
    assert config["optimized_metric"] == "val/rougeL" and config["model"]["random_init"] is True  # what a sweep selects on
    assert config["parameters"]["trainable_params"] == metrics["trainable_params"] > 0
    # the summary says what metrics.json says: status, test metrics, counts
    summary = run["summary"]
    for key in ("status", "test/rougeL", "test/zero_shot_rougeL", "val/loss", "trainable_params", "exported_params", "steps"):
        assert summary[key] == metrics[key], key
    assert summary["status"] == "completed"
    # per-step loss and learning rate, validation metrics
    history = run["history"]
    assert [r["trainer/global_step"] for r in history if "train/loss" in r] == [0, 1, 2]
    assert [r["trainer/global_step"] for r in history if "lr-AdamW" in r] == [0, 1, 2]
    val_steps = [r["trainer/global_step"] for r in history if "val/rougeL" in r]
    assert len(val_steps) == 2 and val_steps[-1] == 3  # in fit (val_check_interval=2), then trainer.validate
    # samples tables: at each validation and at test, capped at logger.samples_rows
    val_tables = [r["val/samples"] for r in history if "val/samples" in r]
    test_tables = [r["test/samples"] for r in history if "test/samples" in r]
    assert len(val_tables) == 2 and len(test_tables) == 1
    table = table_file(folder, test_tables[0])
    assert table["columns"] == ["id", "input", "prediction", "zero_shot_prediction", "references"]
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and len(table["data"]) == 3
    assert table["data"] == [[p["id"], p["input"], p["prediction"], p["zero_shot_prediction"], "\n".join(p["references"])]
                             for p in predictions[:3]]
    val = table_file(folder, val_tables[-1])
    assert val["columns"] == ["id", "input", "prediction", "references"] and len(val["data"]) == 3  # no zero-shot in val


@pytest.fixture(scope="module")
def wandb_sweep(tmp_path_factory):
    """A 2-job sweep: lr 1e37 diverges at step 3 (the job fails), lr 1e-2 completes."""
    cwd = tmp_path_factory.mktemp("sweep")
    args = ["-m", *[a for a in TINY_CLI if not a.startswith(("task.train_size=", "trainer.max_steps="))],
            "task.train_size=20", "trainer.max_steps=4", "trainer.log_every_n_steps=1", "eval_zero_shot=false",
            "logger=wandb", "optim.lr=1e37,1e-2", "hydra.sweep.dir=multirun/2026-11-28/12-00-00-000000_p7"]
    result = run_module("prefixlab.cli.train", args, cwd, env_drop=NO_KEY)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, cwd / "multirun" / "2026-11-28" / "12-00-00-000000_p7"


def test_a_failing_job_finishes_its_run_as_failed_and_a_sweep_is_one_group(wandb_sweep):
    _, sweep = wandb_sweep
    (_, failed), (_, done) = offline_run(sweep / "0"), offline_run(sweep / "1")
    assert failed["group"] == done["group"] == "2026-11-28/12-00-00-000000_p7"
    assert (failed["name"], done["name"]) == ("lr=1e+37", "lr=0.01")  # only the swept key (as Hydra writes it)
    assert failed["exit_code"] == 1 and done["exit_code"] == 0
    assert failed["summary"]["status"] == "failed" and "loss is nan at step 3" in failed["summary"]["error"]
    assert done["summary"]["status"] == "completed" and done["summary"]["steps"] == 4
    assert failed["summary"]["trainable_params"] == done["summary"]["trainable_params"] > 0


def test_report_cli_on_a_real_sweep_with_a_failed_job(wandb_sweep):
    cwd, sweep = wandb_sweep
    result = run_module("prefixlab.cli.report", [str(sweep.relative_to(cwd))], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    with (sweep / "report.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["job"], r["optim.lr"], r["status"]) for r in rows] == [("0", "1e+37", "failed"), ("1", "0.01", "completed")]
    assert "loss is nan at step 3" in rows[0]["error"] and rows[0]["test/rougeL"] == ""
    metrics = json.loads((sweep / "1" / "metrics.json").read_text())
    assert float(rows[1]["test/rougeL"]) == metrics["test/rougeL"] and int(rows[1]["trainable_params"]) == metrics["trainable_params"]
    md = (sweep / "report.md").read_text()
    assert "2 jobs: 1 failed, 1 completed." in md and "| val/rougeL | higher | 1: lr=0.01 |" in md
    assert (f"Best by val/rougeL (validation chooses; the test figures are that job's): job 1 (lr=0.01), "
            f"val/rougeL {metrics['val/rougeL']:.4g}, test/rougeL {metrics['test/rougeL']:.4g}") in md
    # loss curves from the W&B logs (no csv/ with logger=wandb), both jobs, the failed one up to its last finite step
    png = (sweep / "loss_curves.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 5000
    assert "skipped test/rougeL vs prefix length" in md
