"""What every task provides: examples per split, an instruction, and a scorer."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Optional, Protocol

SPLITS = ("train", "validation", "test")
MISSING = "???"  # OmegaConf's mark of a required value: each conf/task/<name>.yaml sets task.name
# One range check of an option: (holds, key under task., value, what is allowed); config.validate raises for the first that fails.
Check = tuple[bool, str, Any, str]


@dataclass
class TaskOptions:
    """The ``task.*`` keys every task has: the base schema of the ``task`` config group.

    A task's own options (the keyword arguments of its constructor) are a subclass declared in its
    module and named by the task class (``options = E2EOptions``); ``config.register_configs`` stores
    it in Hydra's ConfigStore as ``task/<schema_name>`` and ``conf/task/<name>.yaml`` lists it first in
    its defaults (``<schema_name>@task`` in a ``_global_`` file), so another task's key fails at compose time.
    """

    schema_name: ClassVar[str] = "task_schema"
    name: str = field(default=MISSING, metadata={"help": "which task (conf/task/<file>.yaml sets it)"})
    prompt_style: str = field(default="auto", metadata={"help": "chat | plain | auto (chat if the tokenizer has a template)"})
    max_source_tokens: int = field(default=128, metadata={"help": "source truncated to this many tokens"})
    max_target_tokens: int = field(default=32, metadata={"help": "target truncated to this many tokens in training"})
    train_size: Optional[int] = field(default=None, metadata={"help": "low-data subset of the train split (None: all)"})
    val_size: Optional[int] = field(default=100, metadata={"help": "validation examples generated (None: all); they choose a sweep's best job"})
    test_size: Optional[int] = field(default=60, metadata={"help": "test examples generated (None: the whole test split); "
                                                           "always the same ones, whatever subset_seed, train_size and seed"})
    subset_seed: int = field(default=0, metadata={"help": "seed of the train and validation subsets (never of the test set)"})
    batch_size: int = field(default=8, metadata={"help": "training examples per batch (per device)"})
    eval_batch_size: int = field(default=8, metadata={"help": "inputs per validation/test generation batch"})
    primary_metric: str = field(default="rougeL", metadata={"help": "the task's headline metric (without test/), e.g. bleu, accuracy"})

    def checks(self) -> list[Check]:
        """Range checks of the task's own options (the common keys are checked by config.validate)."""
        return []

    def task_options(self) -> dict[str, Any]:
        """The task's own options (what its constructor takes) as a dict."""
        common = {f.name for f in fields(TaskOptions)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in common}


@dataclass
class DataDirOptions(TaskOptions):
    """Tasks read from the hub or a local copy, split by input with a seed where the data has no split."""

    schema_name = "data_dir_schema"
    data_dir: Optional[str] = field(default=None, metadata={"help": "folder or file of the released data (null: the Hugging Face hub)"})
    split_seed: int = field(default=0, metadata={"help": "seed of a by-input split (validation carved from train, or one file split 80/10/10)"})


class DataError(ValueError):
    """Task data is missing or malformed; the message names the file, split and field."""


@dataclass(frozen=True)
class Example:
    """One source -> target pair. ``references``: every acceptable target (multi-reference tasks)."""

    id: str
    source: str
    target: str
    references: tuple[str, ...]


class GenerationTask(Protocol):
    name: str
    instruction: str  # what a zero-shot prompt asks for; the source follows it
    answer_cue: str  # ends a plain (non-chat) prompt, e.g. "Headline:"
    metric_names: tuple[str, ...]

    def load_split(self, split: str) -> list[Example]: ...

    score: Callable[[list[str], list[tuple[str, ...]]], dict[str, float]]
