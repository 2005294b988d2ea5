"""`python ddp_harness.py <prefixlab-train overrides>`: prefixlab-train, plus a callback that saves
every rank's trainable parameters (``trainable_rank<r>_{start,end}.pt`` in the run directory) when
training starts and ends. Lightning starts the second DDP process by re-running this script, so
both ranks save theirs."""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

import prefixlab.run.runs as runs
from prefixlab.cli import train as train_module


class SaveTrainable(pl.Callback):
    def _save(self, trainer, pl_module, when: str) -> None:
        state = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
        torch.save(state, Path(trainer.default_root_dir) / f"trainable_rank{trainer.global_rank}_{when}.pt")

    def on_train_start(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "start")

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "end")


_build_trainer = runs.build_trainer


def build_trainer(config, logger, run_dir, callbacks=()):
    return _build_trainer(config, logger, run_dir, callbacks=[*callbacks, SaveTrainable()])


runs.build_trainer = build_trainer  # train() imports it from the module at call time

if __name__ == "__main__":
    sys.exit(train_module.main())
