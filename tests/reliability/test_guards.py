"""Unit checks of the guards: the last good state, free space, run directories."""

import types

import pytest
import torch

from prefixlab.training.reliability import LastGoodState
from prefixlab.run.runs import OutputDirError, check_free_space, check_run_dir_creatable, storage_needed


def test_last_good_state_is_the_one_before_the_failing_step():
    module = torch.nn.Linear(3, 2)
    module.bias.requires_grad_(False)
    guard, trainer = LastGoodState(), types.SimpleNamespace(global_step=0)
    assert not guard.restore(module)  # nothing good seen yet
    states = []
    for step in range(3):  # three good steps: copy, then the optimizer changes the weights
        trainer.global_step = step
        guard.on_before_optimizer_step(trainer, module, None)
        states.append(module.weight.detach().clone())
        with torch.no_grad():
            module.weight.add_(1.0)
    with torch.no_grad():
        module.weight.fill_(float("nan"))  # what the next (failing) step would train on
    assert guard.restore(module) and guard.step == 2
    assert torch.equal(module.weight, states[-1])


def test_last_good_state_refuses_non_finite_copies():
    module = torch.nn.Linear(2, 2)
    guard = LastGoodState()
    with torch.no_grad():
        module.weight.fill_(float("inf"))
    guard.on_before_optimizer_step(types.SimpleNamespace(global_step=0), module, None)
    assert not guard.restore(module)


def test_too_little_disk_space_is_reported_before_training(tmp_path, monkeypatch):
    import shutil

    counts = {"trainable_params": 6_210_944, "exported_params": 115_200}
    assert 150 * 2**20 < storage_needed(counts) < 200 * 2**20  # two checkpoints of params + 2 AdamW moments
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(free=10 * 2**20, total=0, used=0))
    with pytest.raises(OutputDirError, match=r"has 10 MiB free; this run's checkpoint and export need about 1\d\d MiB"):
        check_free_space(tmp_path, storage_needed(counts))


def test_a_run_directory_under_a_file_cannot_be_created(tmp_path):
    check_run_dir_creatable(tmp_path / "new" / "deeper")  # creatable: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="is a file, not a folder"):
        check_run_dir_creatable(tmp_path / "file" / "sub" / "run")


@pytest.mark.parametrize("args", [["-m", "hydra.sweep.dir={blocker}/s"], ["hydra.run.dir={blocker}/r"],
                                  ["++hydra.run.dir='{blocker}/q'"]])
def test_the_entry_point_checks_the_run_directory_before_hydra_creates_it(tmp_path, monkeypatch, args):
    import sys

    from prefixlab.cli import train

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setattr(sys, "argv", ["prefixlab-train", *[a.format(blocker=blocker) for a in args]])
    monkeypatch.setattr(train, "hydra_main", lambda: pytest.fail("Hydra should not have started"))
    with pytest.raises(SystemExit) as info:
        train.main()
    assert str(info.value.code).startswith("prefixlab-train: error: run directory ")
    assert f"{blocker} is a file, not a folder" in str(info.value.code)


@pytest.mark.parametrize("raised, signal_name, code", [
    ("SIGTERMException", "SIGTERM", 143),  # Lightning's SIGTERM outside training: a SystemExit that would exit 0
    ("SystemExit", "SIGINT", 130),  # Lightning turns Ctrl-C during evaluation into sys.exit(1)
])
def test_a_signal_outside_the_training_steps_is_still_an_interruption(tmp_path, raised, signal_name, code):
    import json

    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from prefixlab.training.reliability import RunInterrupted, record_failure

    error = SIGTERMException() if raised == "SIGTERMException" else SystemExit(1)
    trainer = types.SimpleNamespace(global_step=6)
    result = record_failure(error, tmp_path, None, trainer, None, {"run_name": "r"}, started=0.0)
    assert isinstance(result, RunInterrupted) and 128 + result.signum == code
    assert f"interrupted by {signal_name} after step 6; no checkpoint yet" in str(result)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["signal"] == signal_name and metrics["step"] == 6


def test_the_same_signal_again_within_a_second_is_one_request_and_later_stops_at_once(tmp_path, monkeypatch):
    """A scheduler that signals every process plus a sweep that passes the signal on deliver it twice
    within milliseconds: that must not count as the insisting second signal (which skips the step's
    checkpoint). Another signal, or the same one after the window, still stops at once."""
    import signal

    from prefixlab.training.reliability import StopOnSignal

    forced = []
    stop = StopOnSignal(tmp_path / "last.ckpt")
    monkeypatch.setattr(stop, "_force_stop", forced.append)
    stop._handle(signal.SIGTERM, None)
    stop._handle(signal.SIGTERM, None)  # passed on by the sweep, milliseconds later
    assert stop.received == signal.SIGTERM and forced == []
    stop._handle(signal.SIGINT, None)  # another signal: the user insists
    assert forced == [signal.SIGINT]
    stop._received_at -= StopOnSignal.REPEAT_WINDOW_S + 0.1  # the same signal, later
    stop._handle(signal.SIGTERM, None)
    assert forced == [signal.SIGINT, signal.SIGTERM]
