"""A joblib sweep whose job is SIGKILLed from outside (issue 19): before, loky broke its whole
worker pool, the sibling job died with it and the sweep ended in a TerminatedWorkerError. Now
only the killed job ends; the sibling keeps its results and the sweep summary names the killed one."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import RUN_CLI, cli_env

pytestmark = pytest.mark.cli  # the real CLI in subprocesses: `make test-fast` skips these


def running_job_pid(job_dir) -> int | None:
    """The process running a job: the pid in its run-folder lock (whatever process the launcher started)."""
    try:
        return json.loads((job_dir / ".prefixlab.lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_joblib_job_killed_with_sigkill_leaves_the_sibling_its_results_and_is_named(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [a for a in RUN_CLI if not a.startswith("trainer.max_steps=")]
    # job 0 trains for 300 steps (minutes): it is still running when it is killed; job 1 trains 3
    proc = subprocess.Popen([sys.executable, "-m", "prefixlab.cli.train", "-m", *args, "launcher=joblib",
                             "hydra.launcher.n_jobs=2", "trainer.max_steps=300,3", f"hydra.sweep.dir={sweep_dir}"],
                            cwd=tmp_path, env={**cli_env(), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while (victim := running_job_pid(sweep_dir / "0")) is None:  # job 0 has started: it holds its folder
        assert proc.poll() is None and time.time() < deadline, "job 0 never started"
        time.sleep(0.2)
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-3000:]

    killed = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert killed["status"] == "killed" and killed["signal"] == "SIGKILL"
    sibling = json.loads((sweep_dir / "1" / "metrics.json").read_text())
    assert sibling["status"] == "completed" and sibling["steps"] == 3, sibling
    assert (sweep_dir / "1" / "predictions.jsonl").is_file() and (sweep_dir / "1" / "prefix" / "prefix.safetensors").is_file()
    assert "TerminatedWorkerError" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert "sweep summary: 2 jobs, 1 completed, 1 killed" in stderr
    assert f"job #0 (trainer.max_steps=300): killed, in {sweep_dir / '0'}" in stderr


@pytest.mark.cli
def test_a_joblib_job_imports_the_modules_the_sweeps_state_names(tmp_path, monkeypatch):
    """Regression: a job process unpickles the sweep's Hydra state (its ConfigStore included), which
    can name a module the sweep imported from a folder a fresh interpreter does not search (a
    script's own folder, a test's helpers). The job ended at once with ModuleNotFoundError; it now
    gets the sweep's import path."""
    import json

    from hydra.core.config_store import ConfigStore

    from pipeline.helpers import train_in_process

    from .test_refused_resume_keeps_folder import RUN

    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "sweep_only_module.py").write_text(
        "from dataclasses import dataclass\n\n\n@dataclass\nclass Extra:\n    x: int = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    import sweep_only_module

    store = ConfigStore.instance()
    store.store(name="sweep_only_extra", node=sweep_only_module.Extra)
    try:
        sweep = tmp_path / "sweep"
        assert train_in_process(monkeypatch, ["-m", *RUN, "launcher=joblib", f"hydra.sweep.dir={sweep}"]) is None
    finally:
        store.repo.pop("sweep_only_extra.yaml", None)
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "completed"
