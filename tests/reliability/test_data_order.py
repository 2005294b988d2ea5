"""The training order is resumable: a pure function of (seed, epoch), equal to the stock
shuffled DataLoader's order (so results did not change), and skipping what was consumed."""

import pytest
import pytorch_lightning as pl
import torch

from prefixlab.data.datamodule import TaskDataModule
from prefixlab.training.resume import ResumableDataModule, ResumableSampler

from pipeline.helpers import TINY_MODEL

DATA = dict(task_name="bbc_headline", tokenizer_name=TINY_MODEL["name_or_path"], max_source_tokens=16,
            max_target_tokens=8, train_size=10, val_size=2, test_size=2, batch_size=4, seed=7)


class RecordIds(pl.LightningModule):
    """Trains nothing useful; records the example ids of every training batch, as Lightning feeds them."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[str]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(list(batch["ids"]))
        return (self.weight * 0).sum() + self.weight.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def batches_seen(datamodule_class, steps: int, train_size: int) -> list[list[str]]:
    module = RecordIds()
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(module, datamodule=datamodule_class(**{**DATA, "train_size": train_size}))
    return module.seen


@pytest.mark.parametrize("train_size", [10, 8])  # epochs ending on a short batch, and on a full one
def test_resumable_order_equals_the_stock_shuffled_loader_over_epochs(train_size):
    stock = batches_seen(TaskDataModule, 8, train_size)  # 8 steps: three epochs
    assert batches_seen(ResumableDataModule, 8, train_size) == stock
    per_epoch = -(-train_size // 4)
    assert stock[:per_epoch] != stock[per_epoch : 2 * per_epoch]  # each epoch is shuffled anew


def test_order_is_a_pure_function_of_seed_and_epoch_and_resume_skips_consumed():
    sampler = ResumableSampler(10, batch_size=4, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    assert full == ResumableSampler(10, batch_size=4, seed=3).order(2) and sorted(full) == list(range(10))
    assert full != ResumableSampler(10, batch_size=4, seed=4).order(2) and full != sampler.order(1)
    sampler.resume_at(epoch=2, consumed=4)
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # the skip applies once
    sampler.resume_at(epoch=1, consumed=4)  # a saved position of another epoch does not apply
    assert list(sampler) == full
