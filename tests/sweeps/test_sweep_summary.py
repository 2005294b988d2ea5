"""Sweeps that report (issue 18): every -m run ends with one summary (jobs completed / failed /
interrupted / killed, the best job by the optimized validation metric in its direction, the report
command), read from the job folders so that every launcher gets the same; sweep.fail_on_error=true
makes a sweep with a failed job exit non-zero; and each job's folder log holds its own output,
its one-line error included (before, train.log of a failed job was empty)."""

import json
import math
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from pipeline.helpers import TINY_CLI
from prefixlab.cli.sweep_callback import SweepSummaryCallback
from prefixlab.sweeps.summary import summarize


def fake_job(sweep, number, overrides, metrics, optimized_metric="val/${task.primary_metric}", primary="rougeL"):
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["model=tiny_random", *overrides]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": optimized_metric,
                                                                "task": {"primary_metric": primary}}))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def test_the_summary_counts_names_what_did_not_complete_and_picks_the_best_by_validation(tmp_path):
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["optim.lr=0.1"], {"status": "completed", "val/rougeL": 0.30, "test/rougeL": 0.99})
    fake_job(sweep, 1, ["optim.lr=0.01"], {"status": "completed", "val/rougeL": 0.50, "test/rougeL": 0.10})
    fake_job(sweep, 2, ["optim.lr=1e37"], {"status": "failed", "error": "RunFailed: loss is nan at step 3"})
    fake_job(sweep, 3, ["optim.lr=1e-5"], {"status": "killed", "signal": "SIGKILL"})
    fake_job(sweep, 4, ["optim.lr=1e-6"], None)  # still running, or killed before it wrote anything
    summary = summarize(sweep)
    assert summary.lines[0] == "sweep summary: 5 jobs, 2 completed, 1 failed, 1 killed, 1 no metrics.json (running or killed)"
    assert f"  job #2 (optim.lr=1e37): failed, in {sweep / '2'} (RunFailed: loss is nan at step 3)" in summary.lines
    assert f"  job #3 (optim.lr=1e-5): killed, in {sweep / '3'}" in summary.lines
    # validation chooses, never test (job 0 has the better test score)
    assert f"best job by val/rougeL (higher is better): #1 (optim.lr=0.01) val/rougeL=0.5, in {sweep / '1'}" in summary.lines
    assert summary.lines[-1] == f"report: prefixlab-report {sweep}"
    assert summary.not_completed == 3 and not summary.all_completed


def test_a_loss_is_better_lower(tmp_path):
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["optim.lr=0.1"], {"status": "completed", "val/loss": 2.0}, optimized_metric="val/loss")
    fake_job(sweep, 1, ["optim.lr=0.01"], {"status": "completed", "val/loss": 1.0}, optimized_metric="val/loss")
    fake_job(sweep, 2, ["optim.lr=1.0"], {"status": "completed", "val/loss": math.nan}, optimized_metric="val/loss")
    summary = summarize(sweep)
    assert summary.lines[0] == "sweep summary: 3 jobs, 3 completed" and summary.all_completed
    assert any(line.startswith("best job by val/loss (lower is better): #1 (optim.lr=0.01)") for line in summary.lines)


def test_fail_on_error_exits_non_zero_only_when_asked(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["optim.lr=0.1"], {"status": "completed", "val/rougeL": 0.3})
    fake_job(sweep, 1, ["optim.lr=1e37"], {"status": "failed", "error": "RunFailed: loss is nan"})
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "sweep": {"fail_on_error": False}})
    SweepSummaryCallback().on_multirun_end(config)  # the default: exit 0, as Hydra does
    assert "sweep summary: 2 jobs, 1 completed, 1 failed" in capsys.readouterr().err
    config.sweep.fail_on_error = True
    with pytest.raises(SystemExit) as exit_:
        SweepSummaryCallback().on_multirun_end(config)
    assert exit_.value.code == "prefixlab-train: error: 1 of 2 sweep jobs did not complete (sweep.fail_on_error=true)"


def test_a_sweep_through_the_cli_reports_fails_when_asked_and_logs_each_jobs_output(tmp_path, monkeypatch, capsys):
    from hydra.core.global_hydra import GlobalHydra

    from prefixlab.cli import train

    sweep = tmp_path / "sweep"
    args = [a for a in TINY_CLI if not a.startswith("trainer.max_steps=")]
    GlobalHydra.instance().clear()
    # job 1 is refused by validate (prefix_length 0): one line, then the sweep goes on to its end
    monkeypatch.setattr(sys, "argv", ["prefixlab-train", "-m", *args, "trainer.max_steps=1", "eval_zero_shot=false",
                                      "method.prefix_length=4,0", "sweep.fail_on_error=true", f"hydra.sweep.dir={sweep}",
                                      "hydra/job_logging=none", "hydra/hydra_logging=none"])
    with pytest.raises(SystemExit) as exit_:
        train.main()
    assert exit_.value.code == "prefixlab-train: error: 1 of 2 sweep jobs did not complete (sweep.fail_on_error=true)"
    err = capsys.readouterr().err
    assert "sweep summary: 2 jobs, 1 completed, 1 failed" in err
    assert f"job #1 (method.prefix_length=0): failed, in {sweep / '1'}" in err
    assert f"best job by val/rougeL (higher is better): #0 (method.prefix_length=4)" in err
    assert f"report: prefixlab-report {sweep}" in err
    # each job's folder log holds what the job printed: the completed job's run summary, the failed job's error
    assert "parameters: trainable" in (sweep / "0" / "train.log").read_text()
    assert "prefixlab-train: error: method.prefix_length=0 is out of range" in (sweep / "1" / "train.log").read_text()
    assert sys.stdout is not None and not hasattr(sys.stdout, "_log")  # the streams are the originals again


def test_a_packed_sweep_refuses_an_unknown_key_per_job_and_reports_it(tmp_path, monkeypatch, capsys):
    """The packed launcher trains a pack's jobs without the task function: the strict check runs there too."""
    from hydra.core.global_hydra import GlobalHydra

    from prefixlab.cli import train

    sweep = tmp_path / "sweep"
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["prefixlab-train", "-m", *TINY_CLI, "launcher=packed", "+trainer.fast_dev_runn=true,false",
                                      f"hydra.sweep.dir={sweep}", "hydra/job_logging=none", "hydra/hydra_logging=none"])
    train.main()  # sweep.fail_on_error=false: exit 0
    err = capsys.readouterr().err
    assert "prefixlab-train: error: trainer.fast_dev_runn is not a key of trainer (TrainerConfig); did you mean trainer.fast_dev_run?" in err
    assert "sweep summary: 2 jobs, 2 failed" in err
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "failed"
