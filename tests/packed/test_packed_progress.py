"""A pack shows its progress while it trains, short packs too: the step, the ETA and every job's
latest loss, on Lightning's bar or (without it) in lines. Before, a pack printed a line only every
trainer.log_every_n_steps steps: a pack shorter than that was silent until it had trained."""

import pytest
import torch
from omegaconf import OmegaConf

from prefixlab.sweeps import packed_module
from prefixlab.sweeps.packed import PackedJob, train_packed

from tests.packed.test_packed import COMMON, compose_job
from tests.pipeline.helpers import TINY_CLI


def train_two_jobs(tmp_path, monkeypatch, progress_bar: bool) -> tuple[list[list[float]], list]:
    """Jobs 0 (3 steps) and 1 (2 steps) in one pack, log_every_n_steps=5 (longer than the pack);
    returns each job's per-step losses (from the pack's checkpoint) and the pack's Trainer."""
    monkeypatch.setattr("prefixlab.training.cpu_memory.keep_freed_memory", lambda: False)  # no ldconfig subprocess
    trainers = []
    stock = packed_module.build_pack_trainer

    def keep(config, max_steps, pack_dir, callbacks, every):
        trainers.append(stock(config, max_steps, pack_dir, callbacks, every))
        return trainers[-1]

    monkeypatch.setattr(packed_module, "build_pack_trainer", keep)
    tiny = [*TINY_CLI, *COMMON, "trainer.log_every_n_steps=5", f"trainer.enable_progress_bar={str(progress_bar).lower()}"]
    configs = [compose_job([*tiny, "trainer.max_steps=3"]), compose_job([*tiny, "trainer.max_steps=2", "method.prefix_length=2"])]
    jobs = [PackedJob(settings=OmegaConf.to_object(c), resolved=OmegaConf.to_container(c, resolve=True), run_dir=tmp_path / str(i))
            for i, c in enumerate(configs)]
    results = train_packed(jobs, pack_dir=tmp_path / "pack")
    assert [r["status"] for r in results] == ["completed", "completed"], results
    saved = torch.load(tmp_path / "pack" / packed_module.CHECKPOINT, weights_only=True)["packed_jobs"]
    return [[values["train/loss"] for _, values in job["log"]] for job in saved], trainers[0]


def test_without_the_bar_a_short_pack_prints_its_first_and_last_step_with_the_eta_and_each_jobs_loss(
        tmp_path, monkeypatch, capsys):
    losses, _ = train_two_jobs(tmp_path, monkeypatch, progress_bar=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("packed step")]
    assert [line.split(",")[0] for line in lines] == ["packed step 1/3", "packed step 3/3"], lines
    assert " s/step, ETA 0:00:" in lines[0] and ", ETA 0:00:00: " in lines[1], lines
    assert lines[0].endswith(f": 0={losses[0][0]:.4f} 1={losses[1][0]:.4f}"), (lines, losses)
    assert lines[1].endswith(f": 0={losses[0][2]:.4f} (done) 1={losses[1][1]:.4f} (done)"), (lines, losses)
    assert losses[0][0] != losses[1][0]  # the jobs' losses differ, so a line that swapped them would show


def test_with_the_bar_each_jobs_latest_loss_stands_beside_it(tmp_path, monkeypatch, capsys):
    losses, trainer = train_two_jobs(tmp_path, monkeypatch, progress_bar=True)
    # what the bar shows beside its step count and ETA: job 1's last loss stays after its 2 steps, beside job 0's third
    shown = trainer.progress_bar_callback.get_metrics(trainer, trainer.lightning_module)
    assert shown == pytest.approx({"loss/0": losses[0][2], "loss/1": losses[1][1]}, rel=1e-6)
    assert "packed step" not in capsys.readouterr().out  # the bar says it: no lines besides
