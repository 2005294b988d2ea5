"""`python ddp_harness.py <prefixlab-train overrides>`: prefixlab-train, plus a callback that saves
every rank's trainable parameters (``trainable_rank<r>_{start,end}.pt`` in the run directory) when
training starts and ends. Lightning starts the second DDP process by re-running this script, so
both ranks save theirs."""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/ (last: its folders shadow nothing)
from harness_common import add_to_run_trainers  # noqa: E402
from prefixlab.cli import train as train_module  # noqa: E402


class SaveTrainable(pl.Callback):
    def _save(self, trainer, pl_module, when: str) -> None:
        state = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
        torch.save(state, Path(trainer.default_root_dir) / f"trainable_rank{trainer.global_rank}_{when}.pt")

    def on_train_start(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "start")

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "end")


add_to_run_trainers(SaveTrainable())  # train() imports runs.build_trainer at call time

if __name__ == "__main__":
    sys.exit(train_module.main())
