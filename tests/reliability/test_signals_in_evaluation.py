"""SIGTERM / SIGINT during evaluation (issue 19): generation ends at the next decoding step and
the run stops after that batch with `status: interrupted`; a second signal stops at once.
Before, SIGTERM during the last validation batch was ignored and the run generated to the end.
`prefixlab-eval` stops the same way; its line says to run the command again (it has no resume), and
an evaluation sweep a signal stopped ends with its summary."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.helpers import EVAL_CLI

from .conftest import RUN_CLI, cli_env, one_error_line, run_cli, wait_for

pytestmark = pytest.mark.cli  # the real CLI in subprocesses: `make test-fast` skips these

EVAL_HARNESS = Path(__file__).with_name("eval_harness.py")
# 3 steps, a periodic checkpoint at 2: last.ckpt is at step 3 only because training's end saves it.
# The harness makes the signalled stage generate 6000 new tokens a batch: a run that does not stop
# mid-generation runs for minutes and times out.
THREE_STEPS = [a for a in RUN_CLI if not a.startswith("trainer.max_steps=")] + ["trainer.max_steps=3"]
STOP_WITHIN_S = 30  # seconds from the signal to the exit, with room for a loaded 2-core machine


def start_evaluating(stage: str, marker: Path, args, cwd, stubborn: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(EVAL_HARNESS), stage, str(marker), "1" if stubborn else "0", *args],
                            cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_and_time(proc: subprocess.Popen, signals) -> tuple[str, float]:
    time.sleep(1.0)  # well inside generate(): its first decoding steps have run
    started = time.time()
    for signum in signals:
        proc.send_signal(signum)
        # a repeat within StopOnSignal.REPEAT_WINDOW_S (1 s) is the same request: an insisting user is slower
        time.sleep(1.5)
    try:
        _, stderr = proc.communicate(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"still running {STOP_WITHIN_S} s after {[s.name for s in signals]}") from None
    return stderr, time.time() - started


@pytest.mark.parametrize("stage, signum", [("validate", signal.SIGTERM), ("test", signal.SIGINT)])
def test_a_signal_during_evaluation_generation_stops_it_within_seconds(tmp_path, stage, signum):
    run_dir, marker = tmp_path / "run", tmp_path / "evaluating"
    proc = start_evaluating(stage, marker, [*THREE_STEPS, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for(marker, proc)
    stderr, elapsed = signal_and_time(proc, [signum])
    assert proc.returncode == 128 + signum, stderr[-3000:]
    during = {"validate": "validation", "test": "test"}[stage]
    assert f"interrupted by {signum.name} after step 3 during {during}" in one_error_line(stderr)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["signal"] == signum.name and metrics["step"] == 3
    assert metrics["interrupted_during"] == during and metrics["last_checkpoint_step"] == 3
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert not (run_dir / "predictions.jsonl").exists()  # cut-short predictions are never written
    if signum == signal.SIGTERM:  # training had finished: resume=auto goes straight to evaluation
        result = run_cli([*THREE_STEPS, f"hydra.run.dir={run_dir}", "resume=auto"], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'} (step 3)" in result.stdout
        resumed = json.loads((run_dir / "metrics.json").read_text())
        assert resumed["status"] == "completed" and resumed["steps"] == 3 and resumed["resumed_at_step"] == 3


def test_a_second_signal_stops_at_once_when_the_first_cannot(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "evaluating"
    # every generate() call ignores stop requests for 120 s: the first SIGTERM alone cannot end it
    proc = start_evaluating("validate", marker, [*THREE_STEPS, f"hydra.run.dir={run_dir}"], tmp_path, stubborn=True)
    wait_for(marker, proc)
    stderr, elapsed = signal_and_time(proc, [signal.SIGTERM, signal.SIGTERM])
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    line = one_error_line(stderr)
    assert "interrupted by SIGTERM after step 3 during validation; stopped at once on a second signal" in line
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["stopped_at_once"] is True and metrics["step"] == 3
    assert metrics["last_checkpoint_step"] == 3


def test_a_second_signal_stops_prefixlab_eval_at_once(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "evaluating"
    proc = start_evaluating("test", marker, ["--eval", *EVAL_CLI, f"hydra.run.dir={run_dir}"], tmp_path, stubborn=True)
    wait_for(marker, proc)
    stderr, elapsed = signal_and_time(proc, [signal.SIGTERM, signal.SIGTERM])
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert ("prefixlab-eval: interrupted by SIGTERM during test; stopped at once on a second signal; no predictions "
            "written (run the same command again to evaluate)") in stderr, stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["stopped_at_once"] is True and "step" not in metrics, metrics
    assert metrics["evaluated"]["kind"] == "none"


def test_a_signal_to_an_evaluation_sweep_stops_it_and_prints_the_sweeps_summary(tmp_path):
    sweep, marker = tmp_path / "sweep", tmp_path / "evaluating"
    proc = start_evaluating("test", marker, ["--eval", "-m", *EVAL_CLI, "generation.num_beams=1,2",
                                             f"hydra.sweep.dir={sweep}"], tmp_path)
    wait_for(marker, proc)
    stderr, elapsed = signal_and_time(proc, [signal.SIGTERM])
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    # prefixlab-eval trains nothing and has no resume: no step, no checkpoint, "run it again"
    assert "prefixlab-eval: interrupted by SIGTERM during test; no predictions written (run the same command again" in stderr
    assert "resume=auto" not in stderr
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["signal"] == "SIGTERM" and metrics["interrupted_during"] == "test"
    assert metrics["evaluated"] == {"source": None, "kind": "none", "split": "test"}
    assert not {"step", "checkpoint", "last_checkpoint_step"} & metrics.keys(), metrics
    assert not (sweep / "0" / "predictions.jsonl").exists() and not (sweep / "1").exists()
    assert "sweep summary: 1 jobs, 1 interrupted" in stderr and f"report: prefixlab-report {sweep}" in stderr
