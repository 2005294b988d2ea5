"""A signal to a sweep's own process (issue 19). `timeout`, `docker stop` and some schedulers send
SIGTERM to that process only: with ``launcher=joblib`` (jobs in processes of their own) the sweep
used to die alone (exit -15, or a KeyboardInterrupt traceback for SIGINT) while its jobs trained
on as orphans, recording nothing. Now the signal is passed on to every running job, each stops
as a single run does (``last.ckpt``, ``status: interrupted``), no job starts after it, the sweep
prints its summary naming the interrupted jobs and exits 128 + the signal. A sweep a signal
stops (any launcher: basic below) still prints its summary, which Hydra's end-of-sweep callback
never sees."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import RUN_CLI, cli_env, start_paused, wait_for
from .test_sweep_survives_a_killed_job import running_job_pid

pytestmark = pytest.mark.cli  # the real CLI in subprocesses: `make test-fast` skips these


@pytest.mark.parametrize("signum, to_every_process", [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)],
                         ids=["SIGTERM", "SIGINT", "SIGTERM-to-every-process"])
def test_a_signal_to_a_joblib_sweeps_process_stops_its_jobs_with_checkpoints_and_starts_no_other(tmp_path, signum,
                                                                                                 to_every_process):
    """to_every_process: as SLURM preemption does, each job also gets the signal itself, so it arrives
    twice within milliseconds (once passed on by the sweep): that is one request, and each job still
    stops after its step with a checkpoint (it used to stop at once, as on a second signal)."""
    sweep = tmp_path / "sweep"
    args = [a for a in RUN_CLI if not a.startswith("trainer.max_steps=")]
    # three jobs, two at a time, each far too long to finish: jobs 0 and 1 train, job 2 waits its turn
    proc = subprocess.Popen([sys.executable, "-m", "prefixlab.cli.train", "-m", *args, "launcher=joblib",
                             "hydra.launcher.n_jobs=2", "trainer.max_steps=100000", "optim.lr=1e-3,2e-3,3e-3",
                             f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env={**cli_env(), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = [sweep / job / "checkpoints" / "last.ckpt" for job in ("0", "1")]
    deadline = time.time() + 300
    while not all(c.is_file() for c in checkpoints):  # both jobs are in their training loops
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the jobs never reached their step-2 checkpoints:\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.2)
    proc.send_signal(signum)  # the sweep's process only
    if to_every_process:
        for job in ("0", "1"):
            os.kill(running_job_pid(sweep / job), signum)
    try:
        _, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
        for job in ("0", "1"):  # jobs orphaned by a sweep that died alone (the old launcher) would train on for hours
            if (pid := running_job_pid(sweep / job)) is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "interrupted" and metrics["signal"] == name, metrics
        assert metrics["last_checkpoint_step"] == metrics["step"] >= 2, metrics  # saved at the step it stopped
    assert not (sweep / "2").exists()  # no job started after the signal
    assert f"sweep stopped by {name}; 1 job not started" in stderr
    assert "sweep summary: 2 jobs, 2 interrupted" in stderr
    for job in ("0", "1"):
        assert f"): interrupted, in {sweep / job}" in stderr


def test_a_basic_sweep_stopped_by_sigterm_prints_its_summary(tmp_path):
    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    proc = start_paused(1, marker, ["-m", *RUN_CLI, "optim.lr=1e-3,2e-3", f"hydra.sweep.dir={sweep}"], tmp_path)
    wait_for(marker, proc)  # job 0 pauses after its first step
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "interrupted"
    assert not (sweep / "1").exists()
    assert "sweep summary: 1 jobs, 1 interrupted" in stderr
    assert f"): interrupted, in {sweep / '0'}" in stderr and f"report: prefixlab-report {sweep}" in stderr
