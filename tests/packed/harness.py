"""Runs a packed `prefixlab-train -m ... launcher=packed` sweep with a pause at a chosen step, so a
test can kill or signal the process at a known point:
`python harness.py <pause at global step> <marker file> <cli args...>`.

At the start of the pack's batch after <pause at> steps (so the checkpoint of that step, if
any, is on disk) it writes the marker file and waits until a stop signal was received (or
120 s), then carries on. Nothing in prefixlab knows about it."""

import sys
import time
from pathlib import Path

import pytorch_lightning as pl

from prefixlab.cli import train as train_module
from prefixlab.sweeps import packed_module

pause_at, marker, args = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]


class Pause(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step != pause_at or marker.exists():
            return
        marker.write_text(str(trainer.global_step))
        stop = next(c for c in trainer.callbacks if type(c).__name__ == "StopOnSignal")
        deadline = time.time() + 120
        while stop.received is None and time.time() < deadline:
            time.sleep(0.02)


stock_build_pack_trainer = packed_module.build_pack_trainer


def build_pack_trainer(config, max_steps, pack_dir, callbacks, checkpoint_every):
    return stock_build_pack_trainer(config, max_steps, pack_dir, [*callbacks, Pause()], checkpoint_every)


packed_module.build_pack_trainer = build_pack_trainer
sys.argv = ["prefixlab-train", *args]
train_module.main()
