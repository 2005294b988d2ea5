"""The LightningDataModule over any registered task.

Training batches are left-padded ``prompt + target`` with the loss on target tokens
only (labels -100 elsewhere). Left padding puts every target in the last columns, so
the LM head only runs there (``PrefixedCausalLM.target_loss``); position ids count
real tokens only, so padding side does not change the result. Evaluation batches carry
the same plus the prompts left-padded for ``generate()`` and the references for scoring.
Tokenized splits are cached between runs (``token_cache.py``: keyed by the tokenizer's content,
the prompt settings and the examples).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from prefixlab.engine.padding import pad_rows
from prefixlab.data.formatting import PromptFormatter
from prefixlab.training.model_loading import load_tokenizer
from prefixlab.tasks import DataError, Example, build_task
from prefixlab.data.token_cache import TokenizedCache

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


def take_subset(examples: list[Example], size: int | None, seed: int) -> list[Example]:
    """A seeded random subset (the same for every method and run with that seed)."""
    if size is None or size >= len(examples):
        return examples
    return random.Random(seed).sample(examples, size)


class TaskDataModule(pl.LightningDataModule):
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
        self.task = build_task(task_name, **(task_options or {}))
        # Hub download, local files, metric dependencies (Java for METEOR): fail here, before any model loads.
        check_available = getattr(self.task, "check_available", None)
        if check_available is not None:
            check_available()
        self.splits: dict[str, list[EncodedExample]] = {}
        self.formatter: PromptFormatter | None = None
        self.token_cache: TokenizedCache | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        tokenizer = load_tokenizer(hp.tokenizer_name, trust_remote_code=bool(hp.get("trust_remote_code", False)))
        self.pad_id = tokenizer.pad_token_id
        self.formatter = PromptFormatter(
            tokenizer, self.task.instruction, self.task.answer_cue, hp.prompt_style, hp.max_source_tokens,
            hp.max_target_tokens, is_encoder_decoder=hp.is_encoder_decoder,
        )
        sizes = {"train": hp.train_size, "validation": hp.val_size, "test": hp.test_size}
        self.token_cache = TokenizedCache(tokenizer, self.formatter) if hp.get("cache_tokenized", True) else None
        for split, size in sizes.items():
            examples = take_subset(self.task.load_split(split), size, hp.subset_seed)
            if not examples:
                raise DataError(f"task {hp.task_name!r}: the {split} split is empty")
            encode = lambda e: (self.formatter.prompt_ids(e.source), self.formatter.target_ids(e.target))
            if self.token_cache is not None:
                encoded = self.token_cache.encoded(hp.task_name, split, examples, encode)
            else:
                encoded = [encode(e) for e in examples]
            self.splits[split] = [EncodedExample(e, prompt, target) for e, (prompt, target) in zip(examples, encoded)]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.seed)
        collate_fn = collate_seq2seq if self.hparams.is_encoder_decoder else collate
        return DataLoader(
            self.splits[split],
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator if shuffle else None,
            collate_fn=lambda batch: collate_fn(batch, self.pad_id),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size, shuffle=False)
