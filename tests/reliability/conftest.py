"""Shared by the reliability tests: the tiny CLI, a subprocess runner, and one uninterrupted
reference run (6 steps, a checkpoint every 2) that resumed runs must equal."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.helpers import TINY_CLI

HARNESS = Path(__file__).with_name("harness.py")
# 20 training examples in batches of 4: epochs of 5 steps, so step 4 is mid-epoch and step 6 in the next one
RUN_CLI = [a for a in TINY_CLI if not a.startswith(("task.train_size=", "trainer.max_steps="))] + [
    "task.train_size=20", "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2", "eval_zero_shot=false",
]


def cli_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}


def run_cli(args, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefixlab.cli.train", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_paused(pause_at: int, marker: Path, args, cwd) -> subprocess.Popen:
    """A training run that stops at the start of the batch after `pause_at` optimizer steps
    (after that step's checkpoint is on disk), writes `marker`, and waits for a signal."""
    return subprocess.Popen([sys.executable, str(HARNESS), str(pause_at), str(marker), *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    import time

    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path} appeared:\n{proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def one_error_line(stderr: str) -> str:
    """The entry point's own message: exactly one `prefixlab-train:` line and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("prefixlab-train:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def prefix_tensors(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "prefix" / "prefix.safetensors"))


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted run; also shows that resume=auto without a checkpoint starts fresh."""
    cwd = tmp_path_factory.mktemp("reference")
    run_dir = cwd / "run"
    result = run_cli([*RUN_CLI, f"hydra.run.dir={run_dir}", "resume=auto"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resume=auto: no checkpoint at {run_dir / 'checkpoints' / 'last.ckpt'}, starting fresh" in result.stdout
    return run_dir
