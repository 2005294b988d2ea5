"""Out-of-range values are rejected at start, with one message naming key, value and range
(the keys test_config.py does not already cover)."""

import pytest
from omegaconf import OmegaConf

from pipeline.test_config import compose_train
from prefixlab.config import ConfigError, validate

BAD = [
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0"),
    ("trainer.accumulate_grad_batches=-2", "trainer.accumulate_grad_batches=-2"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1.0"),
    ("trainer.gradient_clip_val=nan", "trainer.gradient_clip_val=nan"),
    ("trainer.checkpoint_every_n_steps=0", "trainer.checkpoint_every_n_steps=0"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0"),
    ("trainer.accelerator=quantum", "trainer.accelerator='quantum'"),
    ("trainer.precision=8-true", "trainer.precision='8-true'"),
    ("trainer.devices=0", "trainer.devices='0'"),
    ("trainer.devices=-2", "trainer.devices='-2'"),
    ("trainer.devices=two", "trainer.devices='two'"),
    ("generation.length_penalty=nan", "generation.length_penalty=nan"),
    ("generation.length_penalty=inf", "generation.length_penalty=inf"),
    ("generation.no_repeat_ngram_size=-1", "generation.no_repeat_ngram_size=-1"),
    ("optim.lr=inf", "optim.lr=inf"),
    ("optim.lr=1e38", "optim.lr=1e+38"),  # AdamW's lr / (1 - beta1) overflows float32 inside torch
    ("optim.betas=[0.9,1.0]", "optim.betas=[0.9, 1.0]"),
    ("optim.betas=[0.9]", "optim.betas=[0.9]"),
    ("seed=-1", "seed=-1"),
    ("seed=4294967296", "seed=4294967296"),
    ("logger.mode=sometimes", "logger.mode='sometimes'"),
    ("method.init_std=0", "method.init_std=0.0"),
    ("method=lora;method.lora_alpha=0", "method.lora_alpha=0"),  # LoRA's key (LoRAOptions); ";" separates overrides
    ("resume=' '", "resume=' '"),
]


@pytest.mark.parametrize("override, named", BAD, ids=[o for o, _ in BAD])
def test_out_of_range_value_is_rejected_naming_key_value_and_range(override, named):
    settings = OmegaConf.to_object(compose_train(override.split(";")))
    with pytest.raises(ConfigError) as info:
        validate(settings)
    message = str(info.value)
    assert message.startswith(named + " is out of range: "), message
    assert "\n" not in message


@pytest.mark.parametrize("override", [
    "trainer.devices=auto", "trainer.devices=-1", "trainer.devices=2", "trainer.devices='0,1'",
    "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=0", "generation.length_penalty=-0.5",
    "optim.lr=1e37", "trainer.checkpoint_every_n_steps=1", "resume=auto", "seed=0",
])
def test_edge_values_that_are_allowed(override):
    validate(OmegaConf.to_object(compose_train([override])))
