"""One run per run folder (adversarial review: two runs into one hydra.run.dir crashed each other and
mixed their files; a new run in an interrupted run's folder overwrote its checkpoint)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from prefixlab.run.folder_lock import LOCK_FILE, RunFolderLock, RunFolderTaken

HOLDER = """
import sys, time
from prefixlab.run.folder_lock import RunFolderLock
with RunFolderLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold(folder):
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


@pytest.mark.cli  # it starts a process (the lock holder / the writer it kills)
def test_a_locked_folder_is_refused_naming_the_owner_and_a_dead_owners_lock_is_taken_over(tmp_path, capsys):
    holder = _hold(tmp_path)
    try:
        with pytest.raises(RunFolderTaken, match=rf"{tmp_path} is in use by process {holder.pid} on .* \(started .*\); wait"):
            RunFolderLock(tmp_path).__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunFolderLock(tmp_path):  # the kernel released the dead process's lock
        assert f"taking over the lock of process {holder.pid}" in capsys.readouterr().out
    assert (tmp_path / LOCK_FILE).read_text() == ""  # a finished run leaves no owner behind


def _train(run_dir, *extra):
    return subprocess.run([sys.executable, "-m", "prefixlab.cli.train", "model=tiny_random", "trainer.max_steps=1",
                           f"hydra.run.dir={run_dir}", *extra], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"})


@pytest.mark.cli
def test_the_cli_refuses_a_running_runs_folder_before_hydra_writes_into_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = _hold(run)
    try:
        done = _train(run)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"prefixlab-train: error: {run} is in use by process {holder.pid}" in done.stderr
    assert not (run / ".hydra").exists() and not (run / "metrics.json").exists()


@pytest.mark.cli
def test_a_folder_holding_a_checkpoint_is_not_overwritten_without_resume(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"step 11 of an interrupted run")
    done = _train(run)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "already holds a run's checkpoint" in done.stderr and "resume=auto" in done.stderr
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"step 11 of an interrupted run"
    assert not (run / ".hydra").exists() and not (run / "metrics.json").exists()
