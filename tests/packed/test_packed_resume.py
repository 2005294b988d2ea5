"""Packed sweeps keep the reliability guarantees of single runs: a pack killed with SIGKILL
resumes (resume=auto, same hydra.sweep.dir) to exactly the prefixes of an uninterrupted pack;
SIGTERM stops after the current step with a checkpoint, status interrupted in every job's
metrics.json and exit code 143; a job whose steps are done is left alone by the shared AdamW."""

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prefixlab.sweeps import packed_module
from prefixlab.sweeps.packed import PackedJob, train_packed

from tests.packed.test_packed import COMMON, compose_job
from tests.pipeline.helpers import TINY_CLI
from tests.reliability.conftest import cli_env, one_error_line, prefix_tensors, run_cli, wait_for

HARNESS = Path(__file__).with_name("harness.py")
# two jobs sharing the tiny random LM (same seed); 20 examples in batches of 4: epochs of 5 steps,
# so the kill at step 4 is mid-epoch and step 6 is in the next epoch
SWEEP = ["-m", "launcher=packed", *[a for a in TINY_CLI if not a.startswith(("task.train_size=", "trainer.max_steps="))],
         "task.train_size=20", "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2", "eval_zero_shot=false",
         "method.prefix_length=2,4", "trainer.log_every_n_steps=1"]
PACK_CHECKPOINT = Path("pack-0") / "checkpoints" / "last.ckpt"


def start_paused(pause_at: int, marker: Path, args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HARNESS), str(pause_at), str(marker), *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory) -> Path:
    """An uninterrupted packed sweep (resume=auto without a checkpoint starts the pack fresh)."""
    cwd = tmp_path_factory.mktemp("reference")
    sweep = cwd / "sweep"
    result = run_cli([*SWEEP, f"hydra.sweep.dir={sweep}", "resume=auto"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resume=auto: no checkpoint at {sweep / PACK_CHECKPOINT}, starting the pack fresh" in result.stdout
    assert "packed: 2 jobs share one llama LM" in result.stdout
    return sweep


@pytest.mark.cli
def test_sigkill_mid_pack_then_resume_auto_equals_the_uninterrupted_pack(tmp_path, reference_sweep):
    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    proc = start_paused(4, marker, [*SWEEP, f"hydra.sweep.dir={sweep}"], tmp_path)
    wait_for(marker, proc)  # step 4's checkpoint is on disk, the batches of step 5 are being fetched
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    checkpoint = torch.load(sweep / PACK_CHECKPOINT, weights_only=True)
    assert checkpoint["global_step"] == 4
    # every job's own data position: 16 of its 20 examples consumed in epoch 0
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"step": 4, "jobs": [{"epoch": 0, "consumed": 16}, {"epoch": 0, "consumed": 16}]}]
    assert set(checkpoint["state_dict"]) and all(k.startswith("encoders.") for k in checkpoint["state_dict"])
    assert not (sweep / "0" / "prefix").exists()

    refused = run_cli([*SWEEP, f"hydra.sweep.dir={sweep}"], tmp_path)  # without resume: never overwritten
    assert refused.returncode != 0 and "already holds a pack's checkpoint" in one_error_line(refused.stderr)

    result = run_cli([*SWEEP, f"hydra.sweep.dir={sweep}", "resume=auto"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming the pack from {sweep / PACK_CHECKPOINT} (step 4)" in result.stdout
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["steps"] == 6 and metrics["resumed_at_step"] == 4
        resumed, reference = prefix_tensors(sweep / job), prefix_tensors(reference_sweep / job)
        assert resumed.keys() == reference.keys()
        for name in reference:  # bit-identical on CPU: same parameters, optimizer, schedules and batches
            assert torch.equal(resumed[name], reference[name]), (job, name)
        # the training curve survived the kill: all 6 steps reach the job's logger
        with open(sweep / job / "csv" / "metrics.csv") as f:
            steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
        assert steps == list(range(6)), (job, steps)


@pytest.mark.cli
def test_sigterm_stops_the_pack_after_the_step_with_a_checkpoint_and_status_interrupted(tmp_path):
    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    proc = start_paused(2, marker, [*SWEEP, f"hydra.sweep.dir={sweep}"], tmp_path)
    wait_for(marker, proc)  # paused before step 3 (2 steps done)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGTERM  # 143: as if killed by the signal, but after saving
    line = one_error_line(stderr)
    assert "interrupted by SIGTERM after step 3" in line and f"resume=auto and the same hydra.sweep.dir={sweep}" in line
    assert torch.load(sweep / PACK_CHECKPOINT, weights_only=True)["global_step"] == 3  # the step it finished
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "interrupted" and metrics["signal"] == "SIGTERM" and metrics["step"] == 3, metrics
        assert not (sweep / job / "prefix").exists()


def test_a_finished_job_is_left_alone_while_the_others_train(tmp_path, monkeypatch):
    """Job A's 2 steps are done at step 2; B trains to 5. From then on A's parameters and its AdamW
    state (moments, step count) stay exactly as they were: A gets no gradient, so AdamW skips it
    (a zero learning rate would still move its moments). Weight decay makes any touch show."""
    snapshots: list[dict] = []

    import pytorch_lightning as pl

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            optimizer = trainer.optimizers[0]
            groups = []
            for group in optimizer.param_groups:
                params = [p.detach().clone() for p in group["params"]]
                states = [{k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state.get(p, {}).items()}
                          for p in group["params"]]
                groups.append((params, states))
            snapshots.append({"step": trainer.global_step, "groups": groups})

    # (the allocator setting looks libc up with `ldconfig -p`, a subprocess; it changes no numbers)
    monkeypatch.setattr("prefixlab.training.cpu_memory.keep_freed_memory", lambda: False)
    stock = packed_module.build_pack_trainer
    monkeypatch.setattr(packed_module, "build_pack_trainer",
                        lambda config, max_steps, pack_dir, callbacks, every: stock(config, max_steps, pack_dir,
                                                                                   [*callbacks, Record()], every))
    tiny = [*TINY_CLI, *COMMON, "optim.lr=1e-2", "optim.weight_decay=0.5"]
    configs = [compose_job([*tiny, "trainer.max_steps=2"]), compose_job([*tiny, "trainer.max_steps=5", "optim.lr=5e-3"])]
    from omegaconf import OmegaConf

    jobs = [PackedJob(settings=OmegaConf.to_object(c), resolved=OmegaConf.to_container(c, resolve=True), run_dir=tmp_path / str(i))
            for i, c in enumerate(configs)]
    results = train_packed(jobs)
    assert [r["status"] for r in results] == ["completed", "completed"] and [r["steps"] for r in results] == [2, 5]
    assert [s["step"] for s in snapshots] == [1, 2, 3, 4, 5]

    def same(a, b) -> bool:
        params_a, states_a = a
        params_b, states_b = b
        return all(torch.equal(x, y) for x, y in zip(params_a, params_b)) and all(
            sa.keys() == sb.keys() and all(torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])) for k in sa)
            for sa, sb in zip(states_a, states_b))

    a_after = [s["groups"][0] for s in snapshots]
    b_after = [s["groups"][1] for s in snapshots]
    assert not same(a_after[0], a_after[1])  # A trained in its 2 steps
    assert all(same(a_after[1], later) for later in a_after[2:])  # then nothing touched it
    assert all(float(state["step"]) == 2 for state in a_after[-1][1])
    assert all(not same(b_after[i], b_after[i + 1]) for i in range(4))  # B kept training


def test_a_pack_checkpoint_holds_every_jobs_trainable_state_and_never_the_frozen_lm(tmp_path, monkeypatch):
    """The pack's checkpoint is trimmed as a single run's (``frozen_backbone.drop_frozen_weights``):
    each job's encoder, no frozen-LM weight."""
    import pytorch_lightning as pl

    full_state: dict = {}

    class Keep(pl.Callback):
        def on_train_end(self, trainer, pl_module):
            full_state.update(torch.nn.Module.state_dict(pl_module))  # untrimmed: the LM and the encoders

    monkeypatch.setattr("prefixlab.training.cpu_memory.keep_freed_memory", lambda: False)  # no ldconfig subprocess
    stock = packed_module.build_pack_trainer
    monkeypatch.setattr(packed_module, "build_pack_trainer",
                        lambda config, max_steps, pack_dir, callbacks, every: stock(config, max_steps, pack_dir,
                                                                                   [*callbacks, Keep()], every))
    from omegaconf import OmegaConf

    configs = [compose_job([*TINY_CLI, *COMMON, "trainer.max_steps=1", f"method.prefix_length={n}"]) for n in (2, 4)]
    jobs = [PackedJob(settings=OmegaConf.to_object(c), resolved=OmegaConf.to_container(c, resolve=True), run_dir=tmp_path / str(i))
            for i, c in enumerate(configs)]
    assert [r["status"] for r in train_packed(jobs, pack_dir=tmp_path / "pack")] == ["completed", "completed"]
    saved = torch.load(tmp_path / "pack" / packed_module.CHECKPOINT, weights_only=True)["state_dict"]
    frozen = {k for k in full_state if k.startswith("shared.lm.")}
    assert frozen and saved.keys() == full_state.keys() - frozen
    assert {k.split(".")[1] for k in saved} == {"0", "1"}  # encoders.0.*, encoders.1.*: both jobs
    for key, value in saved.items():
        assert torch.equal(value, full_state[key]), key
