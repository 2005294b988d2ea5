"""Extractive QA data: answer characters -> token span, and the best span -> text.

Hand-made offsets first (no tokenizer), then the real MiniLM tokenizer (the embedded package's
tokenizer files only; no weights) on hand-made and country_qa_extractive examples.
"""

from __future__ import annotations

import pytest
import torch

from prefixlab.data.encoder_data import (answer_token_span, best_span, collate_encoder, encode_classification, encode_span,
                                    span_text)
from prefixlab.tasks import DataError, Example, build_task
from prefixlab.tasks.spans import SpanExample

# "[CLS] who ? [SEP] paris is big ##ger [SEP]" over the context "Paris is bigger"
OFFSETS = [(0, 0), (0, 3), (4, 5), (0, 0), (0, 5), (6, 8), (9, 12), (12, 15), (0, 0)]
SEQUENCE_IDS = [None, 0, 0, None, 1, 1, 1, 1, None]


@pytest.fixture(scope="module")
def tokenizer():
    from prefixlab.training.model_loading import MINILM, load_tokenizer

    return load_tokenizer(MINILM)


@pytest.mark.parametrize(
    "chars, expected",
    [
        ((0, 5), (4, 4)),  # "Paris": one token
        ((9, 15), (6, 7)),  # "bigger": two word pieces
        ((6, 15), (5, 7)),  # "is bigger"
        ((10, 13), (6, 7)),  # inside word pieces: the tokens that overlap it
        ((5, 8), (5, 5)),  # starts on the space before "is": the first token ending after it
    ],
)
def test_answer_chars_map_to_the_covering_context_tokens(chars, expected):
    assert answer_token_span(OFFSETS, SEQUENCE_IDS, *chars) == expected


def test_an_answer_cut_off_by_truncation_has_no_span():
    # the window ends after "is": the context went on ("bigger") but was truncated
    offsets, sequence_ids = OFFSETS[:6] + [(0, 0)], SEQUENCE_IDS[:6] + [None]
    assert answer_token_span(offsets, sequence_ids, 9, 15) is None  # wholly beyond the window
    assert answer_token_span(offsets, sequence_ids, 6, 15) is None  # starts inside, ends beyond
    assert answer_token_span(offsets, sequence_ids, 6, 8) == (5, 5)  # still inside
    assert answer_token_span(OFFSETS, SEQUENCE_IDS, 0, 3, context_id=2) is None  # no such sequence


def test_best_span_picks_the_best_valid_context_span():
    seq = len(OFFSETS)
    context = torch.tensor([[s == 1 for s in SEQUENCE_IDS]])  # tokens 4..7
    start, end = torch.full((1, seq), -10.0), torch.full((1, seq), -10.0)
    start[0, 1], end[0, 2] = 50.0, 50.0  # the question tokens score highest: never chosen
    start[0, 7], end[0, 4] = 8.0, 8.0  # (7, 4) scores 16 but ends before it starts: never chosen
    start[0, 5], end[0, 6] = 6.0, 6.0  # "is big": 12, the best valid span
    s, e = best_span(start, end, context, max_answer_tokens=5)
    assert (s.item(), e.item()) == (5, 6)
    assert span_text("Paris is bigger", OFFSETS, 5, 6) == "is big"

    start, end = torch.full((1, seq), -10.0), torch.full((1, seq), -10.0)
    start[0, 4], end[0, 7] = 6.0, 6.0  # the whole context, 4 tokens
    assert tuple(t.item() for t in best_span(start, end, context, max_answer_tokens=4)) == (4, 7)
    s, e = best_span(start, end, context, max_answer_tokens=2)  # too long now
    assert e.item() - s.item() < 2 and context[0, s] and context[0, e]


def test_real_tokenizer_round_trip_hand_made(tokenizer):
    example = SpanExample("x", "Which city?", "The café in Zürich is unusually well-known.", 12, "Zürich", ("Zürich",))
    encoded = encode_span(tokenizer, example, max_tokens=64, where="test")
    assert encoded.start is not None and encoded.context_mask[encoded.start] and encoded.context_mask[encoded.end]
    assert span_text(example.context, encoded.offsets, encoded.start, encoded.end) == "Zürich"  # accents kept

    hyphen = SpanExample("y", "What?", example.context, example.context.index("well-known"), "well-known", ("well-known",))
    enc = encode_span(tokenizer, hyphen, max_tokens=64, where="test")
    assert span_text(hyphen.context, enc.offsets, enc.start, enc.end) == "well-known"

    # a window of 8 tokens: [CLS] which city ? [SEP] the cafe [SEP] -> Zürich is cut off
    truncated = encode_span(tokenizer, example, max_tokens=8, where="test")
    assert len(truncated.input_ids) == 8 and truncated.start is None and truncated.end is None


def test_decoded_span_equals_the_gold_text_on_perfect_logits(tokenizer):
    """Every country_qa_extractive test question: gold span -> one-hot logits -> best_span -> text."""
    examples = build_task("country_qa_extractive").load_spans("test")
    encoded = [encode_span(tokenizer, e, max_tokens=128, where="test") for e in examples]
    assert all(e.start is not None for e in encoded)  # the paragraphs fit in 128 tokens
    batch = collate_encoder(encoded, tokenizer.pad_token_id)
    seq = batch["input_ids"].shape[1]
    start = torch.nn.functional.one_hot(batch["start_positions"], seq).float()
    end = torch.nn.functional.one_hot(batch["end_positions"], seq).float()
    starts, ends = best_span(start, end, batch["context_mask"], max_answer_tokens=30)
    decoded = [span_text(c, o, s, e) for c, o, s, e in zip(batch["contexts"], batch["offsets"], starts.tolist(), ends.tolist())]
    assert decoded == [e.answer for e in examples]
    assert len(examples) > 100


def test_answer_not_in_context_is_one_clear_error():
    with pytest.raises(DataError) as caught:
        SpanExample("France/capital", "What is the capital?", "The capital of France is Paris.", 3, "Paris", ("Paris",))
    message = str(caught.value)
    assert "\n" not in message
    assert "'France/capital'" in message and "'Paris' is not in its context at character 3" in message


def test_label_outside_the_label_set_is_one_clear_error(tokenizer):
    good = Example("a", "Markets rally", "business", ("business",))
    assert encode_classification(tokenizer, good, ("business", "tech"), 16, "task 't', train").label == 0
    with pytest.raises(DataError) as caught:
        encode_classification(tokenizer, Example("b", "x", "sport", ("sport",)), ("business", "tech"), 16, "task 't', train")
    message = str(caught.value)
    assert "\n" not in message and "'sport' is not one of the task's labels (business, tech)" in message


def test_truncated_answers_are_dropped_from_training_and_kept_for_scoring(capsys):
    from prefixlab.data.encoder_data import EncoderDataModule
    from prefixlab.training.model_loading import MINILM

    # 40 tokens: the question and about half of the paragraph, so many answers are cut off
    datamodule = EncoderDataModule("country_qa_extractive", MINILM, max_source_tokens=40, train_size=60, val_size=30,
                                   test_size=30)
    datamodule.setup("fit")
    printed = capsys.readouterr().out
    assert all(e.start is not None for e in datamodule.splits["train"]) and len(datamodule.splits["train"]) < 60
    test = datamodule.splits["test"]
    assert len(test) == 30 and 0 < sum(e.start is None for e in test) < 30
    assert "answers lie beyond task.max_source_tokens=40: dropped from training" in printed
    assert "kept (scored as misses, no loss)" in printed
