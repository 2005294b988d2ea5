"""The real embedded SmolLM2-135M-Instruct: load, two training steps, a generation."""

import pytest
import pytorch_lightning as pl
import torch

from prefixlab.data.datamodule import TaskDataModule
from prefixlab.training.model_loading import SMOLLM2, load_lm, load_tokenizer
from prefixlab.training.lm_module import PrefixTuningModule

pytestmark = pytest.mark.embedded


def test_converted_folder_is_an_ordinary_model_folder(smollm2_dir):
    from pathlib import Path

    files = {p.name for p in Path(smollm2_dir).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    model = load_lm(SMOLLM2)
    assert model.config.model_type == "llama"
    assert model.config.num_key_value_heads == 3 and model.config.num_attention_heads == 9  # grouped-query attention
    assert "quantization_config" not in model.config.to_dict()
    tokenizer = load_tokenizer(SMOLLM2)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])


def test_two_training_steps_and_a_generation_with_the_prefix(tmp_path, smollm2_dir):
    pl.seed_everything(0)
    module = PrefixTuningModule(
        model={"name_or_path": SMOLLM2, "dtype": "float32", "attn_implementation": "sdpa", "random_init": False, "config_overrides": {}},
        method={"name": "prefix", "prefix_length": 10, "mid_dim": 512, "mlp_layers": 1, "dropout": 0.0, "init_std": 0.02, "init": "random", "init_text": ""},
        optim={"lr": 5e-4, "weight_decay": 0.0, "warmup_steps": 0, "betas": [0.9, 0.999]},
        generation={"max_new_tokens": 12, "num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0},
        task_name="bbc_headline",
        max_steps=2,
    )
    counts = module.parameter_counts()
    assert counts["lm_params"] == 134_515_008
    assert counts["exported_params"] == 10 * 2 * 30 * 3 * 64  # prefix_len x (k,v) x layers x kv_heads x head_dim
    dm = TaskDataModule("bbc_headline", SMOLLM2, max_source_tokens=96, train_size=8, val_size=2, test_size=2, batch_size=4, eval_batch_size=2)
    lm_before = {k: v.clone() for k, v in module.prefixed.lm.state_dict().items()}
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    assert all(torch.equal(v, lm_before[k]) for k, v in module.prefixed.lm.state_dict().items())
    batch = next(iter(dm.test_dataloader()))
    with_prefix = module.generate_text(batch["prompt_ids"], batch["prompt_mask"])
    without = module.generate_text(batch["prompt_ids"], batch["prompt_mask"], use_prefix=False)
    assert all(isinstance(t, str) and t for t in with_prefix + without)
