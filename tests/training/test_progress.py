"""The training bar counts optimizer steps up to trainer.max_steps, with an ETA (issue 18:
Lightning's epoch bar read "Epoch 0/-2" under max_epochs=-1 and restarted every epoch), and the
known Lightning noise stays out of a run's output."""

import logging

import pytorch_lightning as pl
import torch

from prefixlab.config import TrainerConfig
from prefixlab.run.progress import StepProgressBar
from prefixlab.run.trainer import build_trainer


class _Tiny(pl.LightningModule):
    """Two batches an epoch, and a frozen submodule kept in eval mode (as prefixlab's backbone is)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.frozen = torch.nn.Linear(2, 2).eval().requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen.eval()
        return self

    def training_step(self, batch, batch_idx):
        return self.layer(self.frozen(batch[0])).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.layer.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)


def _fit(tmp_path, **trainer):
    config = TrainerConfig(**{"max_steps": 5, "log_every_n_steps": 1, "accelerator": "cpu", **trainer})
    run = build_trainer(config, pl.loggers.CSVLogger(str(tmp_path)), tmp_path)
    run.fit(_Tiny())
    return run, next(c for c in run.callbacks if isinstance(c, StepProgressBar))


def test_bar_counts_steps_to_max_steps_across_epochs(tmp_path, capsys):
    run, bar = _fit(tmp_path)  # 5 steps of 2-batch epochs: three epochs, one bar
    text = str(bar.train_progress_bar)
    assert run.current_epoch >= 2 and text.startswith("step 5/5 |")
    assert "<" in text  # elapsed<remaining: the ETA
    printed = capsys.readouterr()
    assert "Epoch" not in printed.out + printed.err and "/-2" not in printed.out + printed.err
    assert "step 1/5" in printed.out + printed.err


def test_bar_counts_optimizer_steps_with_accumulation(tmp_path):
    _, bar = _fit(tmp_path, accumulate_grad_batches=2, max_steps=2)  # 4 batches, 2 optimizer steps
    assert str(bar.train_progress_bar).startswith("step 2/2 |")


def test_no_progress_bar_when_turned_off(tmp_path):
    run = build_trainer(TrainerConfig(max_steps=1, enable_progress_bar=False, accelerator="cpu"),
                        pl.loggers.CSVLogger(str(tmp_path)), tmp_path)
    assert not any(isinstance(c, StepProgressBar) for c in run.callbacks)


def test_known_lightning_noise_is_quiet(tmp_path, recwarn, caplog):
    caplog.set_level(logging.INFO)
    _fit(tmp_path, max_steps=1)
    assert not [w for w in recwarn if "in eval mode" in str(w.message) or "LeafSpec" in str(w.message)]
    assert "litlogger" not in caplog.text
    # the default batch limits (all batches) are not "configured": no line per limit
    assert "was configured so 100%" not in caplog.text


def test_an_asked_batch_limit_still_applies(tmp_path):
    run = build_trainer(TrainerConfig(max_steps=1, limit_val_batches=2, limit_test_batches=0.5, accelerator="cpu"),
                        pl.loggers.CSVLogger(str(tmp_path)), tmp_path)
    assert (run.limit_val_batches, run.limit_test_batches) == (2, 0.5)
    default = build_trainer(TrainerConfig(max_steps=1, accelerator="cpu"), pl.loggers.CSVLogger(str(tmp_path)), tmp_path)
    assert (default.limit_val_batches, default.limit_test_batches) == (1.0, 1.0)
