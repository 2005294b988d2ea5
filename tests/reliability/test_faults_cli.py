"""Faults while `prefixlab-train` runs (real CLI, tiny random model, subprocesses): SIGKILL then
resume, SIGTERM / SIGINT, a diverging loss alone and in a sweep, an unusable run directory, a
bad checkpoint to resume from."""

import json
import shutil
import signal

import pytest
import torch

from .conftest import RUN_CLI, one_error_line, prefix_tensors, run_cli, start_paused, wait_for

pytestmark = pytest.mark.cli  # the real CLI in subprocesses: `make test-fast` skips these


def assert_same_prefix(run_dir, reference_dir):
    resumed, reference = prefix_tensors(run_dir), prefix_tensors(reference_dir)
    assert resumed.keys() == reference.keys()
    for name in reference:  # bit-identical on CPU: same parameters, optimizer, scheduler and batches
        assert torch.equal(resumed[name], reference[name]), name


def test_sigkill_mid_run_then_resume_auto_equals_the_uninterrupted_run(tmp_path, reference_run):
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    proc = start_paused(4, marker, [*RUN_CLI, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for(marker, proc)  # step 4's checkpoint is on disk, the batch of step 5 is being fetched
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "consumed": 16}]
    assert not (run_dir / "prefix").exists()

    result = run_cli([*RUN_CLI, f"hydra.run.dir={run_dir}", "resume=auto"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'} (step 4)" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 6 and metrics["resumed_at_step"] == 4
    assert_same_prefix(run_dir, reference_run)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_at_the_next_step_with_a_checkpoint_and_status_interrupted(tmp_path, reference_run, signum):
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    proc = start_paused(2, marker, [*RUN_CLI, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for(marker, proc)  # paused before step 3 (2 steps done)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum  # as if killed by the signal, but after saving
    line = one_error_line(stderr)
    assert f"interrupted by {signum.name} after step 3" in line and "resume=auto" in line
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["step"] == 3 and metrics["signal"] == signum.name
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3  # the step it finished, not the periodic 2
    assert not (run_dir / "prefix").exists()
    if signum == signal.SIGTERM:  # resume=<path>, into another run directory
        moved = tmp_path / "elsewhere.ckpt"
        shutil.copy(checkpoint, moved)
        resumed_dir = tmp_path / "resumed"
        result = run_cli([*RUN_CLI, f"hydra.run.dir={resumed_dir}", f"resume={moved}"], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads((resumed_dir / "metrics.json").read_text())["resumed_at_step"] == 3
        assert_same_prefix(resumed_dir, reference_run)


def test_a_diverging_loss_fails_naming_the_step_and_exports_the_last_good_prefix(tmp_path):
    from prefixlab.engine.export import load_prefix
    from prefixlab.training.lm_module import PrefixTuningModule

    run_dir = tmp_path / "run"
    # lr 1e37 is a real divergence: with these batches the loss is finite for 3 steps, then nan
    result = run_cli([*RUN_CLI, f"hydra.run.dir={run_dir}", "optim.lr=1e37"], tmp_path)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "loss is nan at step 3" in line and "last good state (after 2 steps)" in line
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["step"] == 3 and "loss is nan at step 3" in metrics["error"]
    assert metrics["exported_step"] == 2
    # the step-2 checkpoint is kept (nothing is saved after a failed step) and is the exported prefix
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    exported = load_prefix(run_dir / "prefix")
    hp = checkpoint["hyper_parameters"]
    module = PrefixTuningModule(**hp)
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    expected = module.exported_prefix().activations.sites["decoder_self"]
    got = exported.activations.sites["decoder_self"]
    assert torch.isfinite(got.keys).all() and torch.equal(got.keys, expected.keys) and torch.equal(got.values, expected.values)


def test_a_diverging_job_does_not_stop_a_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["-m", *RUN_CLI, "trainer.max_steps=4", "optim.lr=1e37,1e-2", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loss is nan at step 3" in one_error_line(result.stderr)
    failed = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    completed = json.loads((sweep_dir / "1" / "metrics.json").read_text())
    assert failed["status"] == "failed" and completed["status"] == "completed" and completed["steps"] == 4
    assert (sweep_dir / "1" / "predictions.jsonl").is_file() and (sweep_dir / "1" / "prefix").is_dir()


def test_a_run_directory_that_cannot_be_created_is_one_line_before_anything_loads(tmp_path):
    # (sweep directories: test_guards.py, in process)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli([*RUN_CLI, f"hydra.run.dir={blocker}/sub"], tmp_path, timeout=120)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"run directory {blocker}/sub cannot be created: {blocker} is a file, not a folder" in line
    assert "parameters:" not in result.stdout  # printed once the model is built


def test_a_truncated_checkpoint_is_one_line_naming_it_before_any_model_loads(tmp_path, reference_run):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((reference_run / "checkpoints" / "last.ckpt").read_bytes()[:3000])
    run_dir = tmp_path / "run"
    result = run_cli([*RUN_CLI, f"hydra.run.dir={run_dir}", f"resume={truncated}"], tmp_path, timeout=120)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"checkpoint {truncated} cannot be read" in line and "truncated or corrupted" in line
    assert "parameters:" not in result.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
