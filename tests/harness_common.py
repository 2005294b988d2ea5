"""What the subprocess harnesses share (tests/reliability/harness.py and eval_harness.py,
tests/packed/harness.py): a callback added to the Trainers `prefixlab-train` builds, a pause at
a training step until a stop signal arrives, and the CLI run itself. Nothing in prefixlab knows
about them.

A harness runs as a script (`python <harness>.py ...`), so it puts tests/ on sys.path before
importing this module:

    sys.path.append(str(Path(__file__).resolve().parents[1]))  # last: its folders shadow nothing
"""

import inspect
import sys
import time
from pathlib import Path

import pytorch_lightning as pl


class PauseAtStep(pl.Callback):
    """At the start of the batch after `pause_at` optimizer steps (so the checkpoint of that step,
    if any, is on disk) writes `marker` and waits until a stop signal was received (or 120 s),
    then carries on."""

    def __init__(self, pause_at: int, marker: Path) -> None:
        self.pause_at, self.marker = pause_at, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step != self.pause_at or self.marker.exists():
            return
        self.marker.write_text(str(trainer.global_step))
        stop = next(c for c in trainer.callbacks if type(c).__name__ == "StopOnSignal")
        deadline = time.time() + 120
        while stop.received is None and time.time() < deadline:
            time.sleep(0.02)


def _with_callback(build, callback: pl.Callback):
    """``build`` (a function with a ``callbacks`` parameter) that also passes ``callback``, whatever
    its other parameters are."""
    signature = inspect.signature(build)

    def build_with_callback(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        bound.arguments["callbacks"] = [*bound.arguments["callbacks"], callback]
        return build(*bound.args, **bound.kwargs)

    return build_with_callback


def add_to_run_trainers(callback: pl.Callback) -> None:
    """`callback` joins every Trainer of a single run (`runs.build_trainer`), also a packed job's evaluation Trainer."""
    import prefixlab.run.runs as runs

    runs.build_trainer = _with_callback(runs.build_trainer, callback)


def add_to_pack_trainers(callback: pl.Callback) -> None:
    """`callback` joins every packed sweep's training Trainer (`packed_module.build_pack_trainer`)."""
    from prefixlab.sweeps import packed_module

    packed_module.build_pack_trainer = _with_callback(packed_module.build_pack_trainer, callback)


def run_prefixlab_train(args: list[str]) -> None:
    """`prefixlab-train <args>` in this process (with whatever the harness patched)."""
    from prefixlab.cli import train as train_module

    sys.argv = ["prefixlab-train", *args]
    train_module.main()


def run_prefixlab_eval(args: list[str]) -> None:
    """`prefixlab-eval <args>` in this process (with whatever the harness patched)."""
    from prefixlab.cli import evaluate as evaluate_module

    sys.argv = ["prefixlab-eval", *args]
    evaluate_module.main()
