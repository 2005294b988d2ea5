"""Upper limits, checked against the model's config before any weights load.

A value too large for the model or the machine would otherwise run for hours before failing
(``generation.max_new_tokens=1000000``), try a 256 GB allocation (``method.mid_dim=1e9``), fail
only after training (``generation.num_beams=1e6``), or wait forever (``trainer.num_nodes=2`` on
one machine). Each is one ``ConfigError`` line naming the key, the value and the limit.
"""

from __future__ import annotations

import os

from prefixlab.config import ConfigError, TrainConfig

BYTES_PER_FLOAT = 4
# A trainable parameter costs itself, its gradient and AdamW's two moments.
TRAINING_COPIES = 4
# Share of this machine's memory a run may plan for: the frozen LM, activations and Python need the rest.
MEMORY_SHARE = 0.5


def _positions(model_config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _kv_width(model_config) -> tuple[int, int]:
    """(layers, key/value numbers per token per layer) of a decoder, from its config."""
    layers = getattr(model_config, "num_hidden_layers", None) or getattr(model_config, "n_layer", None) or 1
    heads = getattr(model_config, "num_attention_heads", None) or getattr(model_config, "n_head", None) or 1
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "n_embd", None) or 1
    head_dim = getattr(model_config, "head_dim", None) or hidden // heads
    return int(layers), int(2 * kv_heads * head_dim)


def memory_budget() -> int:
    """Bytes a run may plan for: half of this machine's memory (psutil), or of the cgroup limit."""
    import psutil

    total = psutil.virtual_memory().total
    try:
        limit = int(open("/sys/fs/cgroup/memory.max").read().strip())
        total = min(total, limit)
    except (OSError, ValueError):  # no cgroup v2 limit ("max") or none readable
        pass
    return int(total * MEMORY_SHARE)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


# Config fields that count or size something: zero or less builds no model (or one that divides by zero).
_SIZE_SUFFIXES = ("_size", "_dim", "_heads", "_layers", "_positions", "_embeddings", "_channels", "_experts")
_SIZE_NAMES = {"d_model", "d_ff", "d_kv", "n_embd", "n_inner", "n_head", "n_layer", "n_positions", "n_ctx"}
# (heads, the count that must divide it): grouped-query attention shares each key/value head among whole groups
_HEAD_PAIRS = (("num_attention_heads", "num_key_value_heads"),)
_WIDTH_AND_HEADS = (("hidden_size", "num_attention_heads"), ("n_embd", "n_head"), ("d_model", "num_heads"))


def _is_size(key: str) -> bool:
    return key in _SIZE_NAMES or key.startswith(("num_", "n_")) or key.endswith(_SIZE_SUFFIXES)


def check_config_overrides(overrides: dict, model_config) -> None:
    """``model.config_overrides`` that name no field of the model's config, have the wrong type, a
    size of zero or less, a probability outside [0, 1], or head counts that do not divide the
    width: one ConfigError before any weights load (they otherwise end in a traceback from
    deep inside the model's constructor)."""
    for key, value in overrides.items():
        named = f"model.config_overrides.{key}={value!r}"
        if not hasattr(model_config, key):
            raise ConfigError(f"{named}: the {model_config.model_type} config has no field {key!r}; "
                              f"see the model's config.json for its fields")
        current = getattr(model_config, key)
        if isinstance(current, bool) and not isinstance(value, bool):
            raise ConfigError(f"{named}: {key} is true or false, not {type(value).__name__}")
        if isinstance(current, int) and not isinstance(current, bool) and (isinstance(value, bool) or not isinstance(value, int)):
            if not (key == "head_dim" and value is None):
                raise ConfigError(f"{named}: {key} is a whole number (the model has {current}), not {type(value).__name__}")
        if isinstance(current, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{named}: {key} is a number (the model has {current}), not {type(value).__name__}")
        if isinstance(value, int) and not isinstance(value, bool) and _is_size(key) and value <= 0:
            raise ConfigError(f"{named} is out of range: {key} counts or sizes part of the model and must be at least 1 "
                              f"(the model has {current})")
        if isinstance(value, float) and ("dropout" in key or key.endswith("_pdrop")) and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{named} is out of range: a dropout probability is between 0 and 1")
    merged = {**{k: getattr(model_config, k, None) for pair in _HEAD_PAIRS + _WIDTH_AND_HEADS for k in pair}, **overrides}
    for heads_key, kv_key in _HEAD_PAIRS:
        heads, kv_heads = merged.get(heads_key), merged.get(kv_key)
        if isinstance(heads, int) and isinstance(kv_heads, int) and heads > 0 and kv_heads > 0 and heads % kv_heads:
            raise ConfigError(f"model.config_overrides: {kv_key}={kv_heads} does not divide {heads_key}={heads}; "
                              f"choose {kv_key} among {[d for d in range(1, heads + 1) if heads % d == 0]}")
    # a config with its own head_dim (Llama, T5's d_kv) sizes heads apart from the width
    explicit_head_dim = any(overrides.get(k, getattr(model_config, k, None)) is not None for k in ("head_dim", "d_kv"))
    for width_key, heads_key in _WIDTH_AND_HEADS:
        width, heads = merged.get(width_key), merged.get(heads_key)
        changed = width_key in overrides or heads_key in overrides
        if (changed and not explicit_head_dim and isinstance(width, int) and isinstance(heads, int)
                and width > 0 and heads > 0 and width % heads):
            raise ConfigError(f"model.config_overrides: {heads_key}={heads} does not divide {width_key}={width}, "
                              f"so the attention heads cannot split the width; change one of them (or set head_dim)")


def check_limits(settings: TrainConfig, model_config, budget: int | None = None) -> None:
    """Raise ConfigError when a setting exceeds what the model or the machine can hold."""
    check_config_overrides(settings.model.config_overrides or {}, model_config)
    budget = memory_budget() if budget is None else budget
    method, task, generation, trainer = settings.method, settings.task, settings.generation, settings.trainer
    from prefixlab.engine.families import adapter_for_model_type

    generates = not adapter_for_model_type(model_config.model_type).is_encoder_only  # encoders never decode
    positions = _positions(model_config)
    if positions is not None and generates and not model_config.is_encoder_decoder:
        needed = task.max_source_tokens + generation.max_new_tokens
        if needed > positions:
            raise ConfigError(
                f"generation.max_new_tokens={generation.max_new_tokens} is out of range: with task.max_source_tokens="
                f"{task.max_source_tokens} the prompt and the output need {needed} positions, and the model has "
                f"{positions}; use at most {max(positions - task.max_source_tokens, 1)}")
    layers, kv_per_token = _kv_width(model_config)
    # decoding keeps keys and values of every position of every beam of every example of a batch
    kv_bytes = (generation.num_beams * task.eval_batch_size * layers * kv_per_token * BYTES_PER_FLOAT
                * (task.max_source_tokens + getattr(method, "prefix_length", 0) + generation.max_new_tokens))
    if generates and kv_bytes > budget:
        raise ConfigError(
            f"generation.num_beams={generation.num_beams} is out of range: with task.eval_batch_size={task.eval_batch_size} "
            f"the decoding cache needs about {_gib(kv_bytes)}, over this machine's budget of {_gib(budget)} "
            f"(half its memory); lower generation.num_beams or task.eval_batch_size")
    if getattr(method, "mid_dim", None) is not None:  # the prefix family's MLP (PrefixOptions)
        prefix_width = layers * kv_per_token
        mlp_params = (method.prefix_length * model_config.hidden_size + model_config.hidden_size * method.mid_dim
                      + (method.mlp_layers - 1) * method.mid_dim ** 2 + method.mid_dim * prefix_width)
        mlp_bytes = mlp_params * BYTES_PER_FLOAT * TRAINING_COPIES
        if mlp_bytes > budget:
            raise ConfigError(
                f"method.mid_dim={method.mid_dim} with method.mlp_layers={method.mlp_layers} is out of range: the "
                f"reparameterization MLP would train {mlp_params:,} parameters, about {_gib(mlp_bytes)} with gradients "
                f"and AdamW state, over this machine's budget of {_gib(budget)}")
    layers_in_model = settings.model.config_overrides.get(
        "num_hidden_layers", getattr(model_config, "num_hidden_layers", None) or getattr(model_config, "n_layer", None))
    if isinstance(getattr(method, "k", None), int) and isinstance(layers_in_model, int) and method.k > layers_in_model:
        raise ConfigError(f"method.k={method.k} is out of range: the model has {layers_in_model} layers")
    if trainer.num_nodes > 1 and not any(k in os.environ for k in ("SLURM_NTASKS", "WORLD_SIZE", "MASTER_ADDR")):
        raise ConfigError(
            f"trainer.num_nodes={trainer.num_nodes} is out of range here: this process was not started by a cluster "
            f"launcher (no SLURM_NTASKS, WORLD_SIZE or MASTER_ADDR), so it would wait forever for the other nodes; "
            f"use launcher=submitit_slurm or torchrun, or trainer.num_nodes=1")
    if trainer.accelerator in ("gpu", "cuda"):
        import torch

        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError(f"trainer.accelerator={trainer.accelerator} is out of range here: no CUDA GPU is "
                              f"visible to this process; use trainer=cpu")
        wanted = str(trainer.devices)
        count = len([d for d in wanted.split(",") if d]) if "," in wanted else (int(wanted) if wanted.isdigit() else 0)
        if count > available:
            raise ConfigError(f"trainer.devices={trainer.devices} is out of range here: {available} GPU(s) visible")
    if trainer.strategy == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("trainer.strategy=deepspeed needs the deepspeed package, which is not installed "
                              "(pip install deepspeed), or use trainer.strategy=fsdp")
