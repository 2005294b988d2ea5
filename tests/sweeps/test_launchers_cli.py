"""Real sweeps through each launcher and the Optuna sweeper, on the tiny random model: a job that
fails (a bad value, a diverged loss) is recorded as failed and the others finish with their results."""

import pytest
import yaml

from .conftest import SWEEP_CLI, job_metrics, run_cli

pytestmark = pytest.mark.cli  # the real CLI in subprocesses: `make test-fast` skips these


def assert_completed(job_dir, metrics):
    assert metrics["status"] == "completed" and metrics["steps"] == 4, metrics
    assert (job_dir / "predictions.jsonl").is_file() and (job_dir / "prefix" / "prefix.safetensors").is_file()


def test_joblib_runs_two_jobs_in_parallel_workers_and_a_diverged_one_is_recorded(tmp_path):
    # the default sweep folder, multirun/<date>/<time>_p<pid>: the workers must resolve ${pid:} to
    # the launching process's pid, not their own (the resolver is cached, and Hydra copies the cache)
    result = run_cli(["-m", *SWEEP_CLI, "launcher=joblib", "hydra.launcher.n_jobs=2", "optim.lr=1e37,1e-2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    sweeps = list(tmp_path.glob("multirun/*/*"))
    assert len(sweeps) == 1, sweeps
    jobs = job_metrics(sweeps[0])
    assert sorted(jobs) == [0, 1]
    assert jobs[0]["status"] == "failed" and "loss is nan at step 3" in jobs[0]["error"]
    assert_completed(sweeps[0] / "1", jobs[1])
    assert "sweep summary: 2 jobs, 1 completed, 1 failed" in result.stdout + result.stderr


def test_submitit_local_runs_two_jobs_and_a_bad_value_is_recorded(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", *SWEEP_CLI, "launcher=submitit_local", "optim.lr=-1,1e-2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_metrics(sweep)
    assert sorted(jobs) == [0, 1]
    assert jobs[0]["status"] == "failed" and "optim.lr=-1.0 is out of range" in jobs[0]["error"]
    assert_completed(sweep / "1", jobs[1])
    logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # two submitit jobs, each its own process with its own log
    # the launching process summarizes jobs that ran in other processes, from their folders
    printed = result.stdout + result.stderr
    assert "sweep summary: 2 jobs, 1 completed, 1 failed" in printed
    assert f"job #0 (optim.lr=-1): failed, in {sweep / '0'}" in printed
    assert "best job by val/rougeL (higher is better): #1 " in printed


def test_optuna_study_tells_a_failed_trial_and_keeps_the_best_returned_metric(tmp_path):
    sweep = tmp_path / "sweep"
    # the preset's TPE sampler, seeded with seed=42, draws 0.01 then -1.0 in its random start-up
    # trials (optuna 2.10): trial 0 trains, the last trial fails at start (NaN) and must not crash the study
    result = run_cli(["-m", *SWEEP_CLI, "hparams_search=optuna", "seed=42", "hydra.sweeper.n_trials=2",
                      "optim.lr=choice(-1.0,0.01)", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_metrics(sweep)
    assert sorted(jobs) == [0, 1]
    failed = [n for n, m in jobs.items() if m["status"] == "failed"]
    completed = [n for n, m in jobs.items() if m["status"] == "completed"]
    assert failed == [1] and completed == [0] and "optim.lr=-1.0" in jobs[1]["error"]
    assert "Failed experiment: the job failed (it returned NaN)" in result.stdout + result.stderr
    assert_completed(sweep / str(completed[0]), jobs[completed[0]])
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"optim.lr": 0.01}
    assert best["best_value"] == jobs[completed[0]]["val/rougeL"]  # what the run returned: optimized_metric, validation


def test_ddp_inside_a_local_sweep_is_refused_not_rerun_by_every_process(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", *SWEEP_CLI, "trainer=ddp_cpu", f"hydra.sweep.dir={sweep}"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_metrics(sweep)
    assert list(jobs) == [0] and jobs[0]["status"] == "failed"
    assert "cannot run inside a local sweep (-m)" in jobs[0]["error"]
    assert not (sweep / "0" / "train_ddp_process_1.log").exists()  # no second process was started
