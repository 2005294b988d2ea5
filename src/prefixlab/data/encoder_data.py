"""Data for encoder tasks: classification (a task with ``labels``) and extractive QA (a task with
``load_spans``), tokenized for a BERT-family encoder and batched right-padded.

Extractive QA, one window per example: ``[CLS] question [SEP] context [SEP]`` cut to
``task.max_source_tokens`` from the end of the context (``truncation="only_second"``). The
answer's character span maps to the first and last context tokens that overlap it
(``answer_token_span``, through the tokenizer's offsets). When truncation cut the answer out of
the window, a training example is dropped (counted and printed: teaching "the answer is at
[CLS]" would teach SQuAD 2.0's no-answer, which v1.1 does not have); a validation or test
example is kept and scored like any other (it counts as a miss), and has no loss. Decoding
(``best_span``) takes the highest start + end logit over context tokens, start <= end, at most
``max_answer_tokens`` tokens, and cuts the answer text out of the context by the offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prefixlab.data.split_datamodule import SplitDataModule
from prefixlab.engine.padding import pad_rows
from prefixlab.tasks import TASKS, DataError
from prefixlab.tasks.spans import SpanExample

CLASSIFICATION, EXTRACTIVE = "classification", "extractive"


def encoder_task_kind(task) -> str:
    """classification (the task has ``labels``) or extractive (it has ``load_spans``); a task that
    only generates text fails here, in one line naming the tasks an encoder can take."""
    if getattr(task, "labels", None):
        return CLASSIFICATION
    if callable(getattr(task, "load_spans", None)):
        return EXTRACTIVE
    fitting = sorted(n for n, t in TASKS.items() if getattr(t, "labels", None) or hasattr(t, "load_spans"))
    raise DataError(
        f"task {task.name!r} generates text, which an encoder cannot do: encoders take classification "
        f"or extractive tasks ({', '.join(fitting)}); use a generative model for {task.name!r}"
    )


# ---- span mapping and decoding ------------------------------------------------------------------
def answer_token_span(
    offsets: list[tuple[int, int]], sequence_ids: list[int | None], char_start: int, char_end: int, context_id: int = 1
) -> tuple[int, int] | None:
    """The (first, last) token indices covering context characters [char_start, char_end), or None
    when the answer is not wholly inside the window (truncation cut it off).

    ``offsets[i]``: token i's character span in its own sequence; ``sequence_ids[i]``: 0 question,
    1 context, None special tokens (what a fast tokenizer returns)."""
    context = [i for i, s in enumerate(sequence_ids) if s == context_id]
    if not context or char_end <= char_start:
        return None
    if offsets[context[0]][0] > char_start or offsets[context[-1]][1] < char_end:
        return None
    start = next(i for i in context if offsets[i][1] > char_start)  # first token ending after the answer starts
    end = next(i for i in reversed(context) if offsets[i][0] < char_end)  # last token starting before it ends
    return (start, end) if start <= end else None


def best_span(
    start_logits: torch.Tensor, end_logits: torch.Tensor, context_mask: torch.Tensor, max_answer_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """start_logits, end_logits: [batch, seq]; context_mask: [batch, seq] bool (True on context tokens).
    Returns (start, end) [batch]: argmax of start + end logits over context spans with
    start <= end < start + max_answer_tokens. A row with no context token gives (0, 0)."""
    seq = start_logits.shape[1]
    scores = start_logits[:, :, None] + end_logits[:, None, :]  # [batch, start, end]
    ones = torch.ones(seq, seq, dtype=torch.bool, device=scores.device)
    band = torch.triu(ones) & ~torch.triu(ones, diagonal=max_answer_tokens)
    valid = band[None] & context_mask[:, :, None] & context_mask[:, None, :]
    flat = scores.masked_fill(~valid, float("-inf")).flatten(1).argmax(dim=1)
    return flat // seq, flat % seq


def span_text(context: str, offsets: list[tuple[int, int]], start: int, end: int) -> str:
    return context[offsets[start][0]: offsets[end][1]]


# ---- encoding -------------------------------------------------------------------------------------
@dataclass
class EncodedInput:
    """One tokenized example. Classification: ``label``. Extractive: ``context``, ``offsets``,
    ``context_mask`` and the gold token span ``start``/``end`` (None: not in the window)."""

    id: str
    text: str  # what predictions.jsonl shows as the input
    references: tuple[str, ...]
    input_ids: list[int]
    token_type_ids: list[int] | None
    label: int | None = None
    context: str | None = None
    offsets: list[tuple[int, int]] = field(default_factory=list)
    context_mask: list[bool] = field(default_factory=list)
    start: int | None = None
    end: int | None = None


def encode_classification(tokenizer, example, labels: tuple[str, ...], max_tokens: int, where: str) -> EncodedInput:
    if example.target not in labels:
        raise DataError(f"{where} example {example.id!r}: label {example.target!r} is not one of the task's labels "
                        f"({', '.join(labels)})")
    enc = tokenizer(example.source, truncation=True, max_length=max_tokens)
    return EncodedInput(example.id, example.source, example.references, enc["input_ids"], enc.get("token_type_ids"),
                        label=labels.index(example.target))


def encode_span(tokenizer, example: SpanExample, max_tokens: int, where: str) -> EncodedInput:
    question_tokens = len(tokenizer(example.question, add_special_tokens=False)["input_ids"])
    if question_tokens + tokenizer.num_special_tokens_to_add(pair=True) >= max_tokens:
        raise DataError(f"{where} example {example.id!r}: the question alone has {question_tokens} tokens, no room for "
                        f"the context in task.max_source_tokens={max_tokens}; raise it")
    enc = tokenizer(example.question, example.context, truncation="only_second", max_length=max_tokens,
                    return_offsets_mapping=True)
    sequence_ids = enc.sequence_ids()
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    span = answer_token_span(offsets, sequence_ids, example.answer_start, example.answer_end)
    return EncodedInput(
        example.id, f"{example.question}\n{example.context}", example.references, enc["input_ids"],
        enc.get("token_type_ids"), context=example.context, offsets=offsets,
        context_mask=[s == 1 for s in sequence_ids], start=span[0] if span else None, end=span[1] if span else None,
    )


def collate_encoder(batch: list[EncodedInput], pad_id: int) -> dict:
    """input_ids, attention_mask (and token_type_ids): [batch, seq] right-padded. Classification:
    labels [batch]. Extractive: start_positions, end_positions [batch] (0 where ``has_span`` is
    False), has_span [batch] bool, context_mask [batch, seq] bool, plus offsets and contexts."""
    ids, mask = pad_rows([e.input_ids for e in batch], pad_id, left=False)
    out = {"input_ids": ids, "attention_mask": mask, "ids": [e.id for e in batch], "sources": [e.text for e in batch],
           "references": [e.references for e in batch]}
    if batch[0].token_type_ids is not None:
        out["token_type_ids"] = pad_rows([e.token_type_ids for e in batch], 0, left=False)[0]
    if batch[0].label is not None:
        out["labels"] = torch.tensor([e.label for e in batch])
    else:
        context_mask = pad_rows([[int(inside) for inside in e.context_mask] for e in batch], 0, left=False)[0].bool()
        out.update(
            start_positions=torch.tensor([e.start if e.start is not None else 0 for e in batch]),
            end_positions=torch.tensor([e.end if e.end is not None else 0 for e in batch]),
            has_span=torch.tensor([e.start is not None for e in batch]),
            context_mask=context_mask, offsets=[e.offsets for e in batch], contexts=[e.context for e in batch],
        )
    return out


class EncoderDataModule(SplitDataModule):
    """The splits of a classification or extractive task, tokenized for an encoder."""

    resumable_train_order = True

    def __init__(
        self, task_name: str, tokenizer_name: str, max_source_tokens: int = 256, train_size: int | None = None,
        val_size: int | None = None, test_size: int | None = None, subset_seed: int = 0, batch_size: int = 8,
        eval_batch_size: int = 8, seed: int = 42, task_options: dict | None = None, trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._open_task(task_name, task_options)

    def _check_task(self) -> None:
        self.kind = encoder_task_kind(self.task)  # before any data or model loads
        self.labels: tuple[str, ...] | None = tuple(self.task.labels) if self.kind == CLASSIFICATION else None

    def _load_split(self, split: str) -> list:
        return self.task.load_split(split) if self.kind == CLASSIFICATION else self.task.load_spans(split)

    def _encode_split(self, split: str, examples: list, tokenizer) -> list[EncodedInput]:
        hp = self.hparams
        where = f"task {hp.task_name!r}, {split}"
        if self.kind == CLASSIFICATION:
            return [encode_classification(tokenizer, e, self.labels, hp.max_source_tokens, where) for e in examples]
        encoded = [encode_span(tokenizer, e, hp.max_source_tokens, where) for e in examples]
        outside = sum(e.start is None for e in encoded)
        if outside:
            fate = "dropped from training" if split == "train" else "kept (scored as misses, no loss)"
            print(f"{where}: {outside} of {len(encoded)} answers lie beyond task.max_source_tokens="
                  f"{hp.max_source_tokens}: {fate}")
        return [e for e in encoded if e.start is not None] if split == "train" else encoded

    def _example_tokens(self, example: EncodedInput) -> int:
        return len(example.input_ids)

    def _collate(self, batch: list[EncodedInput]) -> dict:
        return collate_encoder(batch, self.pad_id)
