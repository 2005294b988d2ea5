"""Small builders shared by the pipeline tests: the tiny random SmolLM2-shaped model."""

TINY_MODEL = {
    "name_or_path": "embedded:smollm2-135m-instruct",
    "dtype": "float32",
    "attn_implementation": "sdpa",
    "random_init": True,
    "gradient_checkpointing": False,
    "config_overrides": {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
    },
}
PREFIX_METHOD = {"name": "prefix", "prefix_length": 4, "mid_dim": 32, "mlp_layers": 1, "dropout": 0.0, "init_std": 0.02,
                 "init": "random", "init_text": "", "k": 2, "lora_r": 8, "lora_alpha": 16, "target_modules": [],
                 "prefix_sites": None}
OPTIM = {"lr": 1e-2, "weight_decay": 0.0, "warmup_steps": 0, "betas": [0.9, 0.999]}
GENERATION = {"max_new_tokens": 4, "num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0}

TINY_CLI = [
    "model=tiny_random",
    "method.prefix_length=4",
    "method.mid_dim=32",
    "task.train_size=16",
    "task.val_size=4",
    "task.test_size=4",
    "task.max_source_tokens=48",
    "task.batch_size=4",
    "task.eval_batch_size=4",
    "generation.max_new_tokens=4",
    "trainer.max_steps=3",
    "trainer.enable_progress_bar=false",
]

# the evaluation settings of TINY_CLI (what prefixlab-eval's generation and scoring see), without the training ones
EVAL_CLI = [a for a in TINY_CLI if a.split("=")[0] in (
    "model", "task.val_size", "task.test_size", "task.max_source_tokens", "task.eval_batch_size",
    "task.train_size", "generation.max_new_tokens", "trainer.enable_progress_bar")]


def load_tiny_lm():
    from prefixlab.training.model_loading import load_lm

    return load_lm(
        TINY_MODEL["name_or_path"], random_init=True, config_overrides=TINY_MODEL["config_overrides"]
    )


def train_in_process(monkeypatch, args) -> object:
    """`prefixlab-train args` in this process; the message it exits with (None: success). Hydra's
    job logging stays off: its dictConfig would close pytest's own log handlers (a past CI failure)."""
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from prefixlab.cli import train

    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["prefixlab-train", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"])
    try:
        train.main()
    except SystemExit as exit_:
        return exit_.code
    return None
