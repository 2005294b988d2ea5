"""Training touches only the prefix: frozen LM bit-identical, gradients only on the prefix,
checkpoints without the LM."""

import copy

import pytorch_lightning as pl
import torch

from prefixlab.data.datamodule import TaskDataModule
from prefixlab.training.lm_module import PrefixTuningModule

from .helpers import GENERATION, OPTIM, PREFIX_METHOD, TINY_MODEL


def _module(method=PREFIX_METHOD):
    return PrefixTuningModule(
        model=TINY_MODEL, method=method, optim=OPTIM, generation=GENERATION, task_name="bbc_headline", max_steps=3
    )


def _datamodule():
    return TaskDataModule(
        "bbc_headline", TINY_MODEL["name_or_path"], max_source_tokens=48, train_size=12, val_size=4, test_size=4,
        batch_size=4, eval_batch_size=4,
    )


def _trainer(tmp_path, steps=3):
    return pl.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path,
    )


def test_frozen_lm_is_bit_identical_after_training_and_prefix_changed(tmp_path):
    pl.seed_everything(0)
    module = _module()
    lm_before = copy.deepcopy(module.prefixed.lm.state_dict())
    prefix_before = copy.deepcopy(module.prefixed.prefix_encoder.state_dict())
    _trainer(tmp_path).fit(module, datamodule=_datamodule())
    for name, tensor in module.prefixed.lm.state_dict().items():
        assert torch.equal(tensor, lm_before[name]), f"frozen LM weight {name} changed"
    changed = [n for n, t in module.prefixed.prefix_encoder.state_dict().items() if not torch.equal(t, prefix_before[n])]
    assert changed, "training did not update the prefix"


def test_only_prefix_parameters_receive_gradients():
    module = _module()
    dm = _datamodule()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module.training_step(batch, 0).backward()
    for name, param in module.named_parameters():
        if name.startswith("prefixed.lm."):
            assert param.grad is None and not param.requires_grad, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_loss_is_on_target_tokens_only():
    dm = _datamodule()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    encoded = dm.splits["train"]
    by_prompt = {tuple(e.prompt_ids): e for e in encoded}
    for row in range(batch["labels"].shape[0]):
        supervised = batch["labels"][row] != -100
        real = batch["input_ids"][row][batch["attention_mask"][row] == 1].tolist()
        # the real tokens are prompt + target; labels are set exactly on the target, ending with EOS
        n_target = int(supervised.sum())
        example = by_prompt[tuple(real[:-n_target])]
        assert batch["labels"][row][supervised].tolist() == example.target_ids
        assert example.target_ids[-1] == dm.formatter.tokenizer.eos_token_id
        assert supervised.nonzero().min() > (batch["attention_mask"][row] == 0).sum()  # never on padding or prompt


def test_target_loss_equals_the_full_lm_loss():
    module = _module()
    dm = _datamodule()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        full = module.prefixed(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]).loss
        fast = module.prefixed.target_loss(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert torch.allclose(full, fast, atol=1e-6)


def test_checkpoint_holds_prefix_and_optimizer_but_not_the_lm(tmp_path):
    module = _module()
    trainer = _trainer(tmp_path, steps=2)
    trainer.fit(module, datamodule=_datamodule())
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["optimizer_states"], "optimizer state is needed to resume"
    assert not any(k.startswith("prefixed.lm.") for k in checkpoint["state_dict"])
    assert any(k.startswith("prefixed.prefix_encoder.") for k in checkpoint["state_dict"])
    lm_bytes = sum(t.numel() * t.element_size() for t in module.prefixed.lm.state_dict().values())
    trainable_bytes = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    # prefix + two Adam moments + bookkeeping: a few times the prefix, far below the LM
    assert path.stat().st_size < 4 * trainable_bytes + 200_000
    assert path.stat().st_size < 0.5 * lm_bytes


def test_checkpoint_reloads_into_a_fresh_module(tmp_path):
    module = _module()
    trainer = _trainer(tmp_path, steps=2)
    trainer.fit(module, datamodule=_datamodule())
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    reloaded = PrefixTuningModule.load_from_checkpoint(tmp_path / "last.ckpt")
    for name, tensor in module.prefixed.prefix_encoder.state_dict().items():
        assert torch.equal(tensor, reloaded.prefixed.prefix_encoder.state_dict()[name])
