"""Typed schemas for every config group, registered in Hydra's ConfigStore.

YAML files under ``conf/`` only choose and override: they are merged into these
dataclasses, so a misspelt key or a wrong type fails at compose time with Hydra's
message, before anything loads. ``validate`` then checks value ranges and
cross-field rules, again before any model or data is touched.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from prefixlab.methods import get_method, method_names
from prefixlab.training.model_loading import SMOLLM2

LOGGERS = ("csv", "wandb")


class ConfigError(ValueError):
    """A config value is out of range; the message names the key, the value and what is allowed."""


@dataclass
class ModelConfig:
    name_or_path: str = field(default=SMOLLM2, metadata={"help": "HF model id, local folder, or embedded:<name>"})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager"})
    random_init: bool = field(default=False, metadata={"help": "random weights, same architecture (debug runs)"})
    config_overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "e.g. {num_hidden_layers: 2}"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute layers in backward: less memory, one more forward per layer (slower)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "run the model's own Python code (config.json auto_map): only for a model you have inspected and trust; exported prefixes can never turn this on"})


@dataclass
class MethodConfig:
    name: str = field(default="prefix", metadata={"help": "prefix | prefix_flat | infix | embedding | finetune | finetune_topk | lora | ia3 | adapter | head (encoders)"})
    prefix_length: int = field(default=10, metadata={"help": "prefix / infix / prompt positions"})
    prefix_sites: Optional[list[str]] = field(default=None, metadata={"help": "attention sites with a prefix (None: all of the model's)"})
    mid_dim: Optional[int] = field(default=None, metadata={"help": "hidden width of the reparameterization MLP (prefix, infix)"})
    mlp_layers: int = field(default=1, metadata={"help": "hidden Linear+Tanh layers of the MLP"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the prefix activations (LoRA: on its input)"})
    init_std: float = field(default=0.02, metadata={"help": "std of the random init of a flat prefix (adapter: of its down-projection)"})
    init: str = field(default="random", metadata={"help": "random | text (the LM's activations of init_text)"})
    init_text: str = field(default="", metadata={"help": "words for init=text, e.g. 'summarize' or 'table-to-text:'"})
    k: int = field(default=2, metadata={"help": "finetune_topk: number of top layers trained"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator"})
    target_modules: list[str] = field(default_factory=list, metadata={"help": "lora/ia3 target modules (empty: PEFT's default)"})
    bottleneck: Optional[int] = field(default=None, metadata={"help": "adapter: width r of each bottleneck adapter (2*d*r + r + d parameters each); null with adapter_params_percent"})
    adapter_params_percent: Optional[float] = field(default=None, metadata={"help": "adapter: size r so the adapters hold this % of the LM's parameters (the paper's ADAPTER(3%) / (0.1%)); null with bottleneck"})
    adapter_placement: str = field(default="ffn", metadata={"help": "adapter: ffn (one after each feed-forward block) | houlsby (after attention too)"})


@dataclass
class TaskConfig:
    name: str = field(default="bbc_headline", metadata={"help": "which task (see conf/task/)"})
    prompt_style: str = field(default="auto", metadata={"help": "chat | plain | auto (chat if the tokenizer has a template)"})
    max_source_tokens: int = field(default=128, metadata={"help": "source truncated to this many tokens"})
    max_target_tokens: int = field(default=32, metadata={"help": "target truncated to this many tokens in training"})
    train_size: Optional[int] = field(default=None, metadata={"help": "low-data subset of the train split (None: all)"})
    val_size: Optional[int] = field(default=100, metadata={"help": "validation examples generated (None: all); they choose a sweep's best job"})
    test_size: Optional[int] = field(default=60, metadata={"help": "test examples generated (None: all)"})
    subset_seed: int = field(default=0, metadata={"help": "seed of the subsets above"})
    batch_size: int = 8
    eval_batch_size: int = 8
    # Task-specific options (null: the task's default); a task rejects one it does not take.
    data_dir: Optional[str] = field(default=None, metadata={"help": "e2e/dart: folder or file of the released data (null: Hugging Face hub); bbc_topic: corpus folder"})
    split_seed: Optional[int] = field(default=None, metadata={"help": "seed of a by-input split (e2e/dart with one file, country_qa); null: 0"})
    train_file: Optional[str] = field(default=None, metadata={"help": "task=local: CSV or JSON-lines file of the train split"})
    validation_file: Optional[str] = field(default=None, metadata={"help": "task=local: file of the validation split"})
    test_file: Optional[str] = field(default=None, metadata={"help": "task=local: file of the test split"})
    source_column: Optional[str] = field(default=None, metadata={"help": "task=local: column of the input text (null: source)"})
    target_column: Optional[str] = field(default=None, metadata={"help": "task=local: column of the target text (null: target)"})
    file_format: Optional[str] = field(default=None, metadata={"help": "task=local: csv | jsonl (null: from the extension)"})
    instruction: Optional[str] = field(default=None, metadata={"help": "task=local: the instruction the prompt starts with"})
    train_topics: Optional[list[str]] = field(default=None, metadata={"help": "bbc_headline topic extrapolation: train on these topics (null: all but test_topics)"})
    test_topics: Optional[list[str]] = field(default=None, metadata={"help": "bbc_headline topic extrapolation: test on every article of these topics (null: all but train_topics)"})
    test_categories: Optional[str] = field(default=None, metadata={"help": "webnlg: all | seen | unseen test categories (seen: in the train split); null: all"})
    primary_metric: str = field(default="rougeL", metadata={"help": "the task's headline metric (without test/), e.g. bleu, accuracy"})


@dataclass
class GenerationConfig:
    max_new_tokens: int = 24
    num_beams: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0


@dataclass
class OptimConfig:
    lr: float = field(default=5e-4, metadata={"help": "AdamW learning rate (the paper's 5e-5 needs thousands of steps)"})
    weight_decay: float = 0.0
    warmup_steps: int = 0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class TrainerConfig:
    max_steps: int = field(default=80, metadata={"help": "optimizer steps (the bounded CPU default)"})
    val_check_interval: Optional[int] = field(default=None, metadata={"help": "validate every N steps (None: at end)"})
    accelerator: str = "auto"
    devices: str = "auto"
    precision: str = "32-true"
    gradient_clip_val: float = 1.0
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 5
    enable_progress_bar: bool = True
    deterministic: bool = False
    checkpoint_every_n_steps: Optional[int] = field(
        default=None, metadata={"help": "write checkpoints/last.ckpt every N optimizer steps (None: min(50, max_steps))"}
    )
    strategy: str = field(
        default="auto",
        metadata={"help": "Lightning strategy: auto | ddp | ddp_spawn | fsdp | deepspeed ... (several devices or nodes; "
                          "conf/trainer/ddp.yaml, fsdp.yaml, ddp_cpu.yaml)"},
    )
    num_nodes: int = field(default=1, metadata={"help": "machines in a multi-node run (each with trainer.devices processes)"})


@dataclass
class LoggerConfig:
    kind: str = field(default="csv", metadata={"help": "csv | wandb"})
    project: str = "prefixlab"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    mode: Optional[str] = field(default=None, metadata={"help": "online | offline; None: offline unless WANDB_MODE or an API key is set"})
    samples_rows: int = field(default=16, metadata={"help": "wandb: rows of the generated-samples table logged at each validation and test (0: none)"})


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 42
    eval_zero_shot: bool = field(default=True, metadata={"help": "also score the frozen LM without prefix on test"})
    optimized_metric: str = field(default="val/${task.primary_metric}", metadata={"help": "the value train() returns: what a sweep selects on (val/...; test/... only typed, with a warning)"})
    run_name: str = "${task.name}-${method.name}-L${method.prefix_length}"
    resume: Optional[str] = field(
        default=None,
        metadata={"help": "null: start fresh | auto: continue from <run dir>/checkpoints/last.ckpt if it exists | a .ckpt path"},
    )


def register_configs() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "bf16", "64")  # Lightning's names and aliases
FLOAT32_MAX = 3.4028234663852886e38
# Lightning's registered strategy names that fit this module (a test checks each one is registered):
# the DDP family and FSDP; deepspeed needs its own package. "auto" is one device, or DDP over several.
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_find_unused_parameters_true", "fsdp", "deepspeed")


def _require(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r} is out of range: {allowed}")


_WARNED_TEST_SELECTION: set[str] = set()  # the test/ metrics already warned about in this process


def warn_test_selection(metric: str) -> None:
    """One stderr line per process (a sweep validates every job) when a sweep would select on a test metric."""
    if not metric.startswith("test/") or metric in _WARNED_TEST_SELECTION:
        return
    _WARNED_TEST_SELECTION.add(metric)
    print(f"prefixlab-train: warning: optimized_metric={metric} chooses hyperparameters by a test metric, which "
          f"inflates the reported best (the test set is then part of the selection); "
          f"the default val/{metric.removeprefix('test/')} selects on validation", file=sys.stderr)


def validate(cfg: TrainConfig) -> None:
    """Range and cross-field checks that the types cannot express. Raises ConfigError."""
    from prefixlab.tasks import TASKS

    _require(cfg.method.name in method_names(), "method.name", cfg.method.name, f"one of {', '.join(method_names())}")
    spec = get_method(cfg.method.name)  # what the method needs: prefixlab.methods (its family's module)
    _require(cfg.method.prefix_length > 0, "method.prefix_length", cfg.method.prefix_length, "must be >= 1")
    if spec.uses_mlp:
        _require(cfg.method.mid_dim is not None and cfg.method.mid_dim > 0, "method.mid_dim", cfg.method.mid_dim,
                 f"must be >= 1 for method {cfg.method.name} (its MLP's width)")
    else:
        _require(cfg.method.mid_dim is None, "method.mid_dim", cfg.method.mid_dim,
                 f"must be null: method {cfg.method.name} has no reparameterization MLP (use method=prefix for one)")
    _require(cfg.method.init != "text" or spec.is_prefix, "method.init", cfg.method.init,
             f"text init applies to prefix methods ({', '.join(method_names(is_prefix=True))}), not {cfg.method.name}")
    _require(cfg.method.k >= 1, "method.k", cfg.method.k, "must be >= 1")
    _require(cfg.method.lora_r >= 1, "method.lora_r", cfg.method.lora_r, "must be >= 1")
    _require(cfg.method.prefix_sites is None or len(cfg.method.prefix_sites) > 0, "method.prefix_sites",
             cfg.method.prefix_sites, "null (all sites) or a non-empty list of decoder_self, encoder_self, cross")
    _require(cfg.method.mlp_layers >= 1, "method.mlp_layers", cfg.method.mlp_layers, "must be >= 1")
    if spec.uses_bottleneck:
        _require((cfg.method.bottleneck is None) != (cfg.method.adapter_params_percent is None), "method.bottleneck",
                 cfg.method.bottleneck, "set exactly one of method.bottleneck and method.adapter_params_percent")
        _require(cfg.method.bottleneck is None or cfg.method.bottleneck >= 1, "method.bottleneck", cfg.method.bottleneck, "must be >= 1")
        percent = cfg.method.adapter_params_percent
        _require(percent is None or (math.isfinite(percent) and 0 < percent <= 100), "method.adapter_params_percent",
                 percent, "must be in (0, 100]")
        _require(cfg.method.adapter_placement in ("ffn", "houlsby"), "method.adapter_placement",
                 cfg.method.adapter_placement, "ffn | houlsby")
    else:
        _require(cfg.method.bottleneck is None and cfg.method.adapter_params_percent is None, "method.bottleneck",
                 cfg.method.bottleneck if cfg.method.bottleneck is not None else cfg.method.adapter_params_percent,
                 f"must be null with method.adapter_params_percent: method {cfg.method.name} has no adapters (use method=adapter)")
    _require(0.0 <= cfg.method.dropout < 1.0, "method.dropout", cfg.method.dropout, "must be in [0, 1)")
    _require(cfg.method.init in ("random", "text"), "method.init", cfg.method.init, "random | text")
    _require(
        cfg.method.init != "text" or bool(cfg.method.init_text.strip()),
        "method.init_text", cfg.method.init_text, "must hold some words when method.init=text",
    )
    _require(cfg.task.name in TASKS, "task.name", cfg.task.name, f"one of {', '.join(sorted(TASKS))}")
    _require(cfg.task.prompt_style in ("auto", "chat", "plain"), "task.prompt_style", cfg.task.prompt_style, "auto | chat | plain")
    _require(cfg.task.batch_size >= 1, "task.batch_size", cfg.task.batch_size, "must be >= 1")
    _require(cfg.task.eval_batch_size >= 1, "task.eval_batch_size", cfg.task.eval_batch_size, "must be >= 1")
    _require(cfg.task.max_source_tokens >= 1, "task.max_source_tokens", cfg.task.max_source_tokens, "must be >= 1")
    _require(cfg.task.max_target_tokens >= 1, "task.max_target_tokens", cfg.task.max_target_tokens, "must be >= 1")
    for key in ("train_size", "val_size", "test_size"):
        value = getattr(cfg.task, key)
        _require(value is None or value >= 1, f"task.{key}", value, "must be >= 1, or null for the whole split")
    _require(cfg.task.test_categories in (None, "all", "seen", "unseen"), "task.test_categories", cfg.task.test_categories,
             "all | seen | unseen (webnlg), or null")
    overlap = sorted(set(cfg.task.train_topics or ()) & set(cfg.task.test_topics or ()))
    _require(not overlap, "task.test_topics", cfg.task.test_topics, f"must not share topics with task.train_topics (both have {overlap})")
    _require(cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "must be > 0")
    _require(len(cfg.optim.betas) == 2 and all(0.0 <= b < 1.0 for b in cfg.optim.betas), "optim.betas",
             cfg.optim.betas, "two values, each in [0, 1)")
    # AdamW's first update is lr / (1 - beta1): beyond float32 it fails inside torch with an overflow error.
    beta1 = cfg.optim.betas[0] if cfg.optim.betas else 0.0
    _require(math.isfinite(cfg.optim.lr) and cfg.optim.lr / (1.0 - beta1) < FLOAT32_MAX, "optim.lr", cfg.optim.lr,
             f"must be below {FLOAT32_MAX * (1.0 - beta1):.3g} (lr / (1 - beta1) must fit in float32)")
    _require(cfg.optim.weight_decay >= 0, "optim.weight_decay", cfg.optim.weight_decay, "must be >= 0")
    _require(cfg.optim.warmup_steps >= 0, "optim.warmup_steps", cfg.optim.warmup_steps, "must be >= 0")
    _require(cfg.trainer.max_steps >= 1, "trainer.max_steps", cfg.trainer.max_steps, "must be >= 1")
    _require(
        cfg.trainer.checkpoint_every_n_steps is None or cfg.trainer.checkpoint_every_n_steps >= 1,
        "trainer.checkpoint_every_n_steps", cfg.trainer.checkpoint_every_n_steps, "must be >= 1, or null for min(50, max_steps)",
    )
    _require(cfg.trainer.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches",
             cfg.trainer.accumulate_grad_batches, "must be >= 1")
    _require(math.isfinite(cfg.trainer.gradient_clip_val) and cfg.trainer.gradient_clip_val >= 0,
             "trainer.gradient_clip_val", cfg.trainer.gradient_clip_val, "must be >= 0 (0: no clipping)")
    _require(cfg.trainer.log_every_n_steps >= 1, "trainer.log_every_n_steps", cfg.trainer.log_every_n_steps, "must be >= 1")
    _require(cfg.trainer.accelerator in ACCELERATORS, "trainer.accelerator", cfg.trainer.accelerator,
             f"one of {', '.join(ACCELERATORS)}")
    _require(str(cfg.trainer.precision) in PRECISIONS, "trainer.precision", cfg.trainer.precision,
             f"one of {', '.join(PRECISIONS)}")
    _require(bool(re.fullmatch(r"auto|-1|[1-9][0-9]*|[0-9]+(,[0-9]+)+,?|[0-9]+,", str(cfg.trainer.devices))), "trainer.devices",
             cfg.trainer.devices, "auto, -1 (all), a device count >= 1, or a list of device ids such as 0,1")
    _require(cfg.trainer.strategy in STRATEGIES, "trainer.strategy", cfg.trainer.strategy, f"one of {', '.join(STRATEGIES)}")
    _require(cfg.trainer.num_nodes >= 1, "trainer.num_nodes", cfg.trainer.num_nodes, "must be >= 1")
    _require(0 <= cfg.seed < 2**32, "seed", cfg.seed, "must be in [0, 2**32) (Lightning replaces other seeds with a random one)")
    _require(
        cfg.trainer.val_check_interval is None or cfg.trainer.val_check_interval >= 1,
        "trainer.val_check_interval", cfg.trainer.val_check_interval, "must be >= 1 or null",
    )
    _require(cfg.generation.max_new_tokens >= 1, "generation.max_new_tokens", cfg.generation.max_new_tokens, "must be >= 1")
    _require(cfg.generation.num_beams >= 1, "generation.num_beams", cfg.generation.num_beams, "must be >= 1")
    _require(math.isfinite(cfg.generation.length_penalty), "generation.length_penalty", cfg.generation.length_penalty,
             "must be a finite number (> 0 favours longer beams, < 0 shorter)")
    _require(cfg.generation.no_repeat_ngram_size >= 0, "generation.no_repeat_ngram_size",
             cfg.generation.no_repeat_ngram_size, "must be >= 0 (0: off)")
    _require(cfg.logger.kind in LOGGERS, "logger.kind", cfg.logger.kind, f"one of {', '.join(LOGGERS)}")
    _require(cfg.logger.samples_rows >= 0, "logger.samples_rows", cfg.logger.samples_rows, ">= 0")
    _require(cfg.logger.mode in (None, "online", "offline", "disabled"), "logger.mode", cfg.logger.mode,
             "online | offline | disabled | null")
    _require(cfg.method.init_std > 0 and math.isfinite(cfg.method.init_std), "method.init_std", cfg.method.init_std, "must be > 0")
    _require(cfg.method.lora_alpha > 0, "method.lora_alpha", cfg.method.lora_alpha, "must be > 0")
    _require(cfg.resume is None or bool(str(cfg.resume).strip()), "resume", cfg.resume,
             "null, auto, or the path of a .ckpt file")
    _require(cfg.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype", cfg.model.dtype, "float32 | bfloat16 | float16")
    _require(cfg.model.attn_implementation in ("sdpa", "eager"), "model.attn_implementation", cfg.model.attn_implementation, "sdpa | eager")
    # what train() returns: metrics.json holds only val/* and test/* (trainer.validate, then trainer.test)
    _require(cfg.optimized_metric.startswith(("val/", "test/")) and len(cfg.optimized_metric.split("/", 1)[1]) > 0,
             "optimized_metric", cfg.optimized_metric, "val/<metric> (the default: val/${task.primary_metric}), "
             "or test/<metric> typed explicitly (it warns: selecting on test inflates the best)")
    warn_test_selection(cfg.optimized_metric)
