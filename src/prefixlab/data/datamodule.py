"""The LM DataModules over any registered task (the split skeleton they share with the encoder
path: ``split_datamodule.SplitDataModule``).

Training batches are left-padded ``prompt + target`` with the loss on target tokens
only (labels -100 elsewhere). Left padding puts every target in the last columns, so
the LM head only runs there (``PrefixedCausalLM.target_loss``); position ids count
real tokens only, so padding side does not change the result. Evaluation batches carry
the same plus the prompts left-padded for ``generate()`` and the references for scoring.
Tokenized splits are cached between runs (``token_cache.py``: keyed by the tokenizer's content,
the prompt settings and the examples).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prefixlab.data.formatting import PromptFormatter
from prefixlab.data.split_datamodule import SplitDataModule, take_subset  # noqa: F401 (take_subset: its old home)
from prefixlab.data.token_cache import TokenizedCache
from prefixlab.engine.padding import pad_rows
from prefixlab.tasks import Example

IGNORE_INDEX = -100


@dataclass
class EncodedExample:
    example: Example
    prompt_ids: list[int]
    target_ids: list[int]


def collate_seq2seq(batch: list[EncodedExample], pad_id: int) -> dict:
    """Encoder-decoder batches: input_ids, attention_mask: [batch, source] right-padded (also
    used as prompt_ids / prompt_mask for generation); labels: [batch, target], -100 at padding."""
    input_ids, attention_mask = pad_rows([e.prompt_ids for e in batch], pad_id, left=False)
    targets, target_mask = pad_rows([e.target_ids for e in batch], pad_id, left=False)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": targets.masked_fill(target_mask == 0, IGNORE_INDEX),
        "prompt_ids": input_ids,
        "prompt_mask": attention_mask,
        "ids": [e.example.id for e in batch],
        "sources": [e.example.source for e in batch],
        "references": [e.example.references for e in batch],
    }


def collate(batch: list[EncodedExample], pad_id: int) -> dict:
    """input_ids, attention_mask, labels: [batch, prompt+target] left-padded;
    prompt_ids, prompt_mask: [batch, prompt] left-padded (for generation)."""
    full = [e.prompt_ids + e.target_ids for e in batch]
    input_ids, attention_mask = pad_rows(full, pad_id, left=True)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, e in enumerate(batch):
        labels[row, input_ids.shape[1] - len(e.target_ids) :] = torch.tensor(e.target_ids)
    prompt_ids, prompt_mask = pad_rows([e.prompt_ids for e in batch], pad_id, left=True)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "ids": [e.example.id for e in batch],
        "sources": [e.example.source for e in batch],
        "references": [e.example.references for e in batch],
    }


class TaskDataModule(SplitDataModule):
    """Any registered task's splits as tokenized ``prompt + target`` for an LM (decoder-only, or
    encoder-decoder with ``is_encoder_decoder``)."""

    def __init__(
        self,
        task_name: str,
        tokenizer_name: str,
        prompt_style: str = "auto",
        max_source_tokens: int = 256,
        max_target_tokens: int = 32,
        train_size: int | None = None,
        val_size: int | None = None,
        test_size: int | None = None,
        subset_seed: int = 0,
        batch_size: int = 8,
        eval_batch_size: int = 8,
        seed: int = 42,
        is_encoder_decoder: bool = False,
        task_options: dict | None = None,
        cache_tokenized: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._open_task(task_name, task_options)
        self.formatter: PromptFormatter | None = None
        self.token_cache: TokenizedCache | None = None

    def _start_encoding(self, tokenizer) -> None:
        hp = self.hparams
        self.formatter = PromptFormatter(
            tokenizer, self.task.instruction, self.task.answer_cue, hp.prompt_style, hp.max_source_tokens,
            hp.max_target_tokens, is_encoder_decoder=hp.is_encoder_decoder,
        )
        self.token_cache = TokenizedCache(tokenizer, self.formatter) if hp.get("cache_tokenized", True) else None

    def _load_split(self, split: str) -> list[Example]:
        return self.task.load_split(split)

    def _encode_split(self, split: str, examples: list[Example], tokenizer) -> list[EncodedExample]:
        encode = lambda e: (self.formatter.prompt_ids(e.source), self.formatter.target_ids(e.target))
        if self.token_cache is not None:
            encoded = self.token_cache.encoded(self.hparams.task_name, split, examples, encode)
        else:
            encoded = [encode(e) for e in examples]
        return [EncodedExample(e, prompt, target) for e, (prompt, target) in zip(examples, encoded)]

    def _collate(self, batch: list[EncodedExample]) -> dict:
        return (collate_seq2seq if self.hparams.is_encoder_decoder else collate)(batch, self.pad_id)

    def _example_tokens(self, example: EncodedExample) -> int:
        return len(example.prompt_ids) + len(example.target_ids)


class ResumableDataModule(TaskDataModule):
    """``TaskDataModule`` with a training order that resumes mid-epoch (same batches, same order)."""

    resumable_train_order = True

    @classmethod
    def for_run(cls, settings, is_encoder_decoder: bool) -> "ResumableDataModule":
        """A run's datamodule from its typed config (``TrainConfig``): single runs and packed
        sweeps build it here, so a job's data is the same whichever way it runs."""
        from prefixlab.tasks import task_options

        task = settings.task
        return cls(
            task.name, settings.model.name_or_path, task.prompt_style, task.max_source_tokens, task.max_target_tokens,
            task.train_size, task.val_size, task.test_size, task.subset_seed, task.batch_size, task.eval_batch_size,
            seed=settings.seed, is_encoder_decoder=is_encoder_decoder, task_options=task_options(task),
            trust_remote_code=settings.model.trust_remote_code,
        )
