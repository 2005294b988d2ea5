"""Typed schemas for every config group, registered in Hydra's ConfigStore.

YAML files under ``conf/`` only choose and override: they are merged into these
dataclasses, so a misspelt key or a wrong type fails at compose time with Hydra's
message, before anything loads. ``validate`` then checks value ranges and
cross-field rules, again before any model or data is touched.

``method`` and ``task`` have one schema per option: the keys every method / task has
(``MethodOptions``, ``TaskOptions``) extended by each method family / task in its own
module (``PrefixOptions`` in ``methods/prefix.py``, ``WebNLGOptions`` in
``tasks/table_to_text.py``); ``register_configs`` stores them under their group
(``method/prefix_schema``) and each ``conf/method|task/<name>.yaml`` lists its schema
first in its defaults, so another option's key fails at compose time too.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Union

from hydra.core.config_store import ConfigStore

from prefixlab.methods import MethodOptions, get_method, method_names, option_schemas
from prefixlab.tasks.base import TaskOptions
from prefixlab.training.model_loading import SMOLLM2

# Each logger is a switch (logger.<name>: true), so that `logger=[csv,tensorboard]` (a list of
# conf/logger options, each setting its own switch) merges into one config with both on.
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")


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
class GenerationConfig:
    max_new_tokens: int = field(default=24, metadata={"help": "tokens generated per validation/test input at most"})
    num_beams: int = field(default=1, metadata={"help": "1: greedy decoding; more: beam search (the paper: 5 for table-to-text, 6 for XSum)"})
    length_penalty: float = field(default=1.0, metadata={"help": "beam search: > 1 favours longer outputs, < 1 shorter (the paper: 0.8 for XSum)"})
    no_repeat_ngram_size: int = field(default=0, metadata={"help": "never repeat an n-gram of this size in an output (0: off)"})


@dataclass
class OptimConfig:
    lr: float = field(default=5e-4, metadata={"help": "AdamW learning rate (the paper's 5e-5 needs thousands of steps)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps, then linear decay to 0 at trainer.max_steps"})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"help": "AdamW betas [beta1, beta2]"})


@dataclass
class EarlyStoppingConfig:
    """Lightning's EarlyStopping on ``optimized_metric`` (a val/ metric; its direction from
    tasks/scoring/directions.py), checked at every periodic validation (trainer.val_check_interval)."""
    enabled: bool = field(default=False, metadata={"help": "stop training when optimized_metric has not improved for `patience` validations (needs trainer.val_check_interval)"})
    patience: int = field(default=3, metadata={"help": "validations in a row without improvement before training stops (>= 1)"})
    min_delta: float = field(default=0.0, metadata={"help": "the least change of the metric, in its own units, that counts as an improvement (>= 0)"})


@dataclass
class TrainerConfig:
    max_steps: int = field(default=80, metadata={"help": "optimizer steps (the bounded CPU default)"})
    val_check_interval: Optional[int] = field(default=None, metadata={"help": "validate every N steps (None: at end)"})
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig,
                                                metadata={"help": "trainer.early_stopping.{enabled,patience,min_delta}"})
    accelerator: str = field(default="auto", metadata={"help": "Lightning accelerator: auto | cpu | gpu | mps"})
    devices: str = field(default="auto", metadata={"help": "Lightning devices: auto, a count (2) or a list ([0,1])"})
    precision: str = field(default="32-true", metadata={"help": "Lightning precision: 32-true | bf16-mixed | 16-mixed"})
    gradient_clip_val: float = field(default=1.0, metadata={"help": "clip the gradient norm of the trainable part to this (0: no clipping)"})
    accumulate_grad_batches: int = field(default=1, metadata={"help": "batches per optimizer step (effective batch = task.batch_size x this x devices)"})
    log_every_n_steps: int = field(default=5, metadata={"help": "log training metrics every N optimizer steps"})
    enable_progress_bar: bool = field(default=True, metadata={"help": "the step bar with an ETA (false: quiet, e.g. in batch jobs)"})
    deterministic: bool = field(default=False, metadata={"help": "torch deterministic algorithms (slower; bit-reproducible on GPU)"})
    checkpoint_every_n_steps: Optional[int] = field(
        default=None, metadata={"help": "write checkpoints/last.ckpt every N optimizer steps (None: min(50, max_steps))"}
    )
    strategy: str = field(
        default="auto",
        metadata={"help": "Lightning strategy: auto | ddp | ddp_spawn | fsdp | deepspeed ... (several devices or nodes; "
                          "conf/trainer/ddp.yaml, fsdp.yaml, ddp_cpu.yaml)"},
    )
    num_nodes: int = field(default=1, metadata={"help": "machines in a multi-node run (each with trainer.devices processes)"})
    # Lightning's own meanings (a count of batches, or true for 1); Union: Lightning reads an int as a
    # count and a float as a fraction of the split, so 2 must stay 2, not become 2.0
    fast_dev_run: Union[bool, int] = field(
        default=False, metadata={"help": "true or N: a smoke test of N (true: 1) train, validation and test batches; "
                                         "no checkpoint, no export, metrics.json status fast_dev_run"})
    limit_val_batches: Union[int, float] = field(
        default=1.0, metadata={"help": "validation batches per validation: an int counts batches, a float in [0, 1] is a fraction"})
    limit_test_batches: Union[int, float] = field(
        default=1.0, metadata={"help": "test batches: an int counts batches, a float in [0, 1] is a fraction"})


@dataclass
class ExportConfig:
    checkpoint: str = field(default="last", metadata={"help": "which weights the run exports (prefix/ or trained/) and scores in its final "
                                                              "val/test metrics: last (the final step) | best (the validation with the best "
                                                              "optimized_metric, checkpoints/best.ckpt; needs trainer.val_check_interval)"})


@dataclass
class LoggerConfig:
    """Which loggers a run writes to (any number at once: ``logger=[csv,tensorboard]``) and their
    shared settings. Each gets the resolved config, the per-step metrics and the samples table."""
    csv: bool = field(default=False, metadata={"help": "<run dir>/csv/metrics.csv (what prefixlab-report plots)"})
    tensorboard: bool = field(default=False, metadata={"help": "<run dir>/tensorboard/ event files: tensorboard --logdir <run or sweep dir>"})
    mlflow: bool = field(default=False, metadata={"help": "an MLflow run in logger.tracking_uri (needs pip install 'prefixlab[mlflow]')"})
    wandb: bool = field(default=False, metadata={"help": "a W&B run per job, <run dir>/wandb/ (offline: wandb sync later)"})
    project: str = field(default="prefixlab", metadata={"help": "the W&B project and the MLflow experiment"})
    entity: Optional[str] = field(default=None, metadata={"help": "wandb: the team or user (null: your default)"})
    group: Optional[str] = field(default=None, metadata={"help": "wandb group / mlflow tag (null: the sweep folder, or the run name)"})
    tags: list[str] = field(default_factory=list, metadata={"help": "added to task:/model:/method: (W&B tags, MLflow tags)"})
    mode: Optional[str] = field(default=None, metadata={"help": "wandb: online | offline | disabled; null: WANDB_MODE, else `wandb offline`'s setting, else online with credentials (wandb login, WANDB_API_KEY), else offline"})
    tracking_uri: Optional[str] = field(default=None, metadata={"help": "mlflow: null: MLFLOW_TRACKING_URI, else sqlite:///<sweep or run dir>/mlflow/mlflow.db; or file:<dir>, sqlite:///<file>, http://host:port"})
    samples_rows: int = field(default=16, metadata={"help": "rows of the generated-samples table at each validation and test (0: none): W&B table, TensorBoard text, MLflow table artifact"})


@dataclass
class SweepConfig:
    fail_on_error: bool = field(
        default=False, metadata={"help": "a -m sweep exits with code 1 when a job failed, was interrupted or killed "
                                         "(false: exit 0; the summary at the end names such jobs either way)"})


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    # The base schemas: the chosen conf/method and conf/task file merges its own schema (a subclass) in.
    method: MethodOptions = field(default_factory=MethodOptions)
    task: TaskOptions = field(default_factory=TaskOptions)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = field(default=42, metadata={"help": "seeds torch, numpy and the data order (seed_everything)"})
    eval_zero_shot: bool = field(default=True, metadata={"help": "also score the frozen LM without prefix on test"})
    optimized_metric: str = field(default="val/${task.primary_metric}", metadata={"help": "the value train() returns: what a sweep selects on (val/...; test/... only typed, with a warning)"})
    # L0 for a method without a prefix (it has no method.prefix_length)
    run_name: str = field(default="${task.name}-${method.name}-L${oc.select:method.prefix_length,0}",
                          metadata={"help": "the run's name in metrics.json, loggers and reports"})
    resume: Optional[str] = field(
        default=None,
        metadata={"help": "null: start fresh | auto: continue from <run dir>/checkpoints/last.ckpt if it exists | a .ckpt path"},
    )
    resume_allow_changes: list[str] = field(
        default_factory=list,
        metadata={"help": "result-changing settings a resume may change, e.g. [optim.lr,trainer.max_steps] (others must "
                          "match the checkpoint's); the new values are applied (training/resume_settings.py)"},
    )


@dataclass
class EvalOptions:
    source: Optional[str] = field(default=None, metadata={"help": "a training checkpoint (.ckpt), an exported prefix folder (prefixlab or PEFT), an encoder export, or null: the bare model"})
    split: str = field(default="test", metadata={"help": "validation | test"})


@dataclass
class EvalConfig(TrainConfig):
    """``prefixlab-eval``: a training run's config (model, task, generation, trainer, logger) plus what to evaluate."""

    eval: EvalOptions = field(default_factory=EvalOptions)


def register_configs() -> None:
    from prefixlab.tasks import task_schemas

    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, schemas in (("method", option_schemas()), ("task", task_schemas())):
        for name, schema in schemas.items():
            store.store(group=group, name=name, node=schema)
    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)


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


def _schema_matches(group: str, options: Any, schema: type, where: str) -> None:
    """The option's schema must be the one its name registers: a conf file that skipped its schema
    (or ``method.name=`` pointing at another family) would leave keys unchecked or missing."""
    _require(type(options) is schema, f"{group}.name", options.name,
             f"its options schema is {schema.__name__} ({where}), but the composed {group} is "
             f"{type(options).__name__}: choose it with {group}={options.name}, and start its conf/{group}/ file "
             f"with defaults: [{schema.schema_name}, _self_]")
    # Hydra's "+group.key=value" appends a key the schema lacks (OmegaConf.to_object keeps it as an
    # attribute); nothing would read it, so the run would silently ignore what the user asked for.
    extra = sorted(set(vars(options)) - {f.name for f in fields(schema)})
    if extra:
        raise ConfigError(f"{group}.{extra[0]}={getattr(options, extra[0])!r} is not a key of {group}={options.name} "
                          f"(schema {schema.__name__}); its keys: {', '.join(f.name for f in fields(schema))}")


def _validate_method(method: MethodOptions) -> None:
    _require(method.name in method_names(), "method.name", method.name, f"one of {', '.join(method_names())}")
    spec = get_method(method.name)  # what the method needs: prefixlab.methods (its family's module)
    _schema_matches("method", method, spec.options, "prefixlab.methods")
    for holds, key, value, allowed in method.checks(spec):  # its own ranges, declared next to its schema
        _require(holds, f"method.{key}", value, allowed)


def _validate_task(task: TaskOptions) -> None:
    from prefixlab.tasks import TASKS

    _require(task.name in TASKS, "task.name", task.name, f"one of {', '.join(sorted(TASKS))}")
    _schema_matches("task", task, TASKS[task.name].options, "prefixlab.tasks")
    _require(task.prompt_style in ("auto", "chat", "plain"), "task.prompt_style", task.prompt_style, "auto | chat | plain")
    _require(task.batch_size >= 1, "task.batch_size", task.batch_size, "must be >= 1")
    _require(task.eval_batch_size >= 1, "task.eval_batch_size", task.eval_batch_size, "must be >= 1")
    _require(task.max_source_tokens >= 1, "task.max_source_tokens", task.max_source_tokens, "must be >= 1")
    _require(task.max_target_tokens >= 1, "task.max_target_tokens", task.max_target_tokens, "must be >= 1")
    for key in ("train_size", "val_size", "test_size"):
        value = getattr(task, key)
        _require(value is None or value >= 1, f"task.{key}", value, "must be >= 1, or null for the whole split")
    for holds, key, value, allowed in task.checks():
        _require(holds, f"task.{key}", value, allowed)


def validate(cfg: TrainConfig) -> None:
    """Range and cross-field checks that the types cannot express. Raises ConfigError."""
    _validate_method(cfg.method)
    _validate_task(cfg.task)
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
    _require(cfg.trainer.fast_dev_run >= 0, "trainer.fast_dev_run", cfg.trainer.fast_dev_run, "true, false, or a batch count >= 0")
    for key in ("limit_val_batches", "limit_test_batches"):
        limit = getattr(cfg.trainer, key)
        _require(limit >= 0 and (isinstance(limit, int) or limit <= 1.0), f"trainer.{key}", limit,
                 "a batch count >= 0 (an int), or a fraction in [0, 1] (a float)")
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
    if not any(getattr(cfg.logger, name) for name in LOGGERS):
        raise ConfigError(f"logger: none is on; turn on at least one of {', '.join(LOGGERS)} (logger=csv, or several: "
                          "logger=[csv,tensorboard])")
    _require(cfg.logger.samples_rows >= 0, "logger.samples_rows", cfg.logger.samples_rows, ">= 0")
    _require(cfg.logger.mode in (None, "online", "offline", "disabled"), "logger.mode", cfg.logger.mode,
             "online | offline | disabled | null")
    _require(cfg.resume is None or bool(str(cfg.resume).strip()), "resume", cfg.resume,
             "null, auto, or the path of a .ckpt file")
    from prefixlab.training.resume_settings import allow_list_problem

    problem = allow_list_problem(cfg)
    if problem:
        raise ConfigError(problem)
    _require(cfg.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype", cfg.model.dtype, "float32 | bfloat16 | float16")
    _require(cfg.model.attn_implementation in ("sdpa", "eager"), "model.attn_implementation", cfg.model.attn_implementation, "sdpa | eager")
    # what train() returns: metrics.json holds only val/* and test/* (trainer.validate, then trainer.test)
    _require(cfg.optimized_metric.startswith(("val/", "test/")) and len(cfg.optimized_metric.split("/", 1)[1]) > 0,
             "optimized_metric", cfg.optimized_metric, "val/<metric> (the default: val/${task.primary_metric}), "
             "or test/<metric> typed explicitly (it warns: selecting on test inflates the best)")
    from prefixlab.training.best_checkpoint import monitoring_problem

    problem = monitoring_problem(cfg)  # early stopping and export.checkpoint=best: before any model loads
    if problem:
        raise ConfigError(problem)
    warn_test_selection(cfg.optimized_metric)
