"""Builders for the reporting tests: fake sweeps written by hand, and the real CLI on the tiny model."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

_spec = importlib.util.spec_from_file_location("pipeline_helpers", Path(__file__).parents[1] / "pipeline" / "helpers.py")
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
TINY_CLI = _helpers.TINY_CLI

# Lightning's CSVLogger layout (header and row shapes as a real run writes them).
CSV_HEADER = "epoch,lr-AdamW,step,test/loss,test/rougeL,train/loss,val/loss,val/rougeL"


def make_job(sweep: Path, num: int, overrides: list[str], choices: dict, config: dict, metrics: dict | None,
             losses: list[float] = ()) -> Path:
    """A job folder as `prefixlab-train -m` leaves it: .hydra/{overrides,config,hydra}.yaml,
    metrics.json (None: the job never wrote one), csv/metrics.csv (train/loss per step)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if losses:
        lines = [CSV_HEADER]
        for step, loss in enumerate(losses):
            lines += [f",0.001,{step},,,,,", f"0,,{step},,,{loss},,"]
        if metrics and "val/loss" in metrics:
            lines.append(f"0,,{len(losses)},,,,{metrics['val/loss']},{metrics.get('val/rougeL', '')}")
        (job / "csv").mkdir()
        (job / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return job


def job_config(method: str, prefix_length: int, train_size=None, lr=5e-4, stage: str = "val") -> dict:
    """The saved config of a job; stage="test": a run from before validation chose (or optimized_metric=test/...)."""
    return {
        "model": {"name_or_path": "embedded:smollm2-135m-instruct", "random_init": True},
        "method": {"name": method, "prefix_length": prefix_length},
        "task": {"name": "bbc_headline", "train_size": train_size, "primary_metric": "rougeL"},
        "optim": {"lr": lr},
        "optimized_metric": stage + "/${task.primary_metric}",  # as Hydra saves it: unresolved
        "run_name": "${task.name}-${method.name}-L${method.prefix_length}",
    }


def completed(rouge_l: float, val_loss: float, trainable: int, **extra) -> dict:
    return {"status": "completed", "steps": 3, "test/rougeL": rouge_l, "test/loss": 2 * val_loss, "val/loss": val_loss,
            "val/rougeL": rouge_l / 2, "test/zero_shot_rougeL": 0.9, "trainable_params": trainable,
            "exported_params": trainable // 10, "trainable_percent_of_lm": 0.5, "lm_params": 1000, "runtime_s": 12.5, **extra}


def run_module(module: str, args: list[str], cwd: Path, env_drop=(), timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env.update({"HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
