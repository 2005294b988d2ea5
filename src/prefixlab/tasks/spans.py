"""Extractive examples: a question, a context, and the answer as a character span of the context.

A task that an encoder can answer by pointing into its input (SQuAD, ``country_qa_extractive``)
provides ``load_spans(split) -> list[SpanExample]`` besides its generative ``load_split``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefixlab.tasks.base import DataError


@dataclass(frozen=True)
class SpanExample:
    """``context[answer_start : answer_start + len(answer)] == answer`` (checked on creation).
    ``references``: every accepted answer text (SQuAD: all annotators' answers), for scoring."""

    id: str
    question: str
    context: str
    answer_start: int
    answer: str
    references: tuple[str, ...]

    def __post_init__(self) -> None:
        found = self.context[self.answer_start: self.answer_start + len(self.answer)]
        if not self.answer.strip() or self.answer_start < 0 or found != self.answer:
            raise DataError(
                f"example {self.id!r}: answer {self.answer!r} is not in its context at character {self.answer_start} "
                f"(the context has {found!r} there); fix answer_start or the answer text"
            )

    @property
    def answer_end(self) -> int:
        """One past the answer's last character."""
        return self.answer_start + len(self.answer)


def spans_to_text_example(example: SpanExample, context_label: str = "Passage"):
    """The same question as a generative ``Example`` for LMs: the question first, so that a
    source cut at ``task.max_source_tokens`` loses the end of the context, never the question."""
    from prefixlab.tasks.base import Example

    return Example(example.id, f"Question: {example.question}\n{context_label}: {example.context}", example.answer,
                   example.references)
