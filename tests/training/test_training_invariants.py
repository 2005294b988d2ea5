"""Training touches only the prefix: frozen LM bit-identical, gradients only on the prefix,
checkpoints without the LM."""

import copy

import pytest
import pytorch_lightning as pl
import torch

from prefixlab.data.datamodule import TaskDataModule
from prefixlab.training.lm_module import PrefixTuningModule
from prefixlab.training.model_loading import load_tokenizer

from pipeline.helpers import GENERATION, OPTIM, PREFIX_METHOD, TINY_MODEL


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


# ---- gradient checkpointing: the frozen LM never runs with dropout ------------------------------------------------


@pytest.fixture(scope="module")
def dropout_model_folder(tiny_models, tmp_path_factory):
    """family -> a local model folder: the tiny GPT-2 / BART / T5 with dropout 0.1 everywhere and the
    embedded tokenizer (its vocabulary and special tokens)."""
    tokenizer = load_tokenizer(TINY_MODEL["name_or_path"])
    tokens = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    folders = {}

    def folder(family: str) -> str:
        if family not in folders:
            if family == "gpt2":
                lm = tiny_models.build_lm("gpt2", run_to_max_new_tokens=False, n_positions=256,
                                          bos_token_id=tokenizer.bos_token_id, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                                          **tokens)
            elif family == "bart":
                lm = tiny_models.build_seq2seq("bart", redraw_std=None, run_to_max_new_tokens=False, max_position_embeddings=256,
                                               bos_token_id=1, decoder_start_token_id=tokenizer.eos_token_id, dropout=0.1,
                                               attention_dropout=0.1, activation_dropout=0.1, **tokens)
            else:
                lm = tiny_models.build_seq2seq("t5", redraw_std=None, run_to_max_new_tokens=False,
                                               decoder_start_token_id=tokenizer.pad_token_id, dropout_rate=0.1, **tokens)
            folders[family] = tiny_models.save_with_tokenizer(lm, tokenizer, tmp_path_factory.mktemp(family))
        return folders[family]

    return folder


def _count_attention_calls(lm) -> list[int]:
    """A counter of the LM's attention-module calls (recomputation in backward included)."""
    calls = [0]
    for module in lm.modules():
        if type(module).__name__.endswith("Attention"):
            module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("family", ["gpt2", "bart", "t5"])
def test_gradient_checkpointing_keeps_dropout_off(family, dropout_model_folder):
    """model.gradient_checkpointing=true once left the frozen LM in train mode (transformers
    checkpoints a layer only in train mode), so dropout was on and the loss of the same batch
    changed from step to step. Now the LM stays in eval mode, checkpointing still recomputes every
    layer in backward, and loss and prefix gradients equal those of a run without checkpointing."""
    folder = dropout_model_folder(family)
    is_encoder_decoder = family != "gpt2"
    datamodule = TaskDataModule("bbc_headline", folder, max_source_tokens=48, train_size=4, val_size=4, test_size=4,
                                batch_size=4, eval_batch_size=4, is_encoder_decoder=is_encoder_decoder)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    runs = {}
    for checkpointing in (False, True):
        model = {**TINY_MODEL, "name_or_path": folder, "random_init": False, "config_overrides": {},
                 "gradient_checkpointing": checkpointing}
        torch.manual_seed(0)  # the same prefix initialization in both runs
        module = PrefixTuningModule(model=model, method=PREFIX_METHOD, optim=OPTIM, generation=GENERATION,
                                    task_name="bbc_headline", max_steps=3)
        module.train()  # what Lightning does before the first training step
        lm = module.prefixed.lm
        assert lm.is_gradient_checkpointing is checkpointing
        assert not [name for name, m in lm.named_modules() if m.training], "frozen LM modules in train mode"
        calls = _count_attention_calls(lm)
        losses = []
        for _ in range(3):
            module.zero_grad()
            calls[0] = 0
            loss = module.training_step(batch, 0)
            forward_calls = calls[0]
            loss.backward()
            losses.append(loss.item())
            # checkpointing recomputes each layer's forward in backward: every attention call runs twice
            assert forward_calls > 0 and calls[0] == forward_calls * (2 if checkpointing else 1)
        assert losses[0] == losses[1] == losses[2], f"the same batch gave different losses: {losses}"
        runs[checkpointing] = losses[0], [p.grad.clone() for p in module.prefixed.prefix_encoder.parameters()]
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-6)
    for plain, checkpointed in zip(runs[False][1], runs[True][1]):
        assert torch.allclose(checkpointed, plain, atol=1e-6)
