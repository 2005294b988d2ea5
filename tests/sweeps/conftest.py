"""Shared by the sweep tests: the real CLI on the tiny random model, in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.helpers import TINY_CLI

# 20 training examples in batches of 4 (as in tests/reliability): with optim.lr=1e37 the loss is
# finite for 3 steps, then nan, a real divergence; 4 steps, no zero-shot pass, to stay fast.
SWEEP_CLI = [a for a in TINY_CLI if not a.startswith(("task.train_size=", "trainer.max_steps="))] + [
    "task.train_size=20", "trainer.max_steps=4", "eval_zero_shot=false",
]


def cli_env(**extra: str) -> dict:
    # one torch thread per job: jobs of a parallel sweep share this machine's cores
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1", **extra}


def run_cli(args, cwd, timeout=400, program=("-m", "prefixlab.cli.train")) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *program, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def job_metrics(sweep_dir: Path) -> dict[int, dict]:
    """{job number: its metrics.json} for every job folder of a sweep."""
    return {int(d.name): json.loads((d / "metrics.json").read_text())
            for d in sweep_dir.iterdir() if d.name.isdigit() and (d / "metrics.json").is_file()}
