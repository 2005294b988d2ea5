"""Fuzzing the data path with arbitrary text (any Unicode, empty strings, sources far longer
than max_source_tokens) through the real SmolLM2 tokenizer: formatting never crashes and
truncates as configured; batches put exactly the target ids in the labels, mask all padding,
and have consistent shapes."""

import functools

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefixlab.data.datamodule import IGNORE_INDEX, EncodedExample, collate, collate_seq2seq
from prefixlab.data.formatting import PromptFormatter
from prefixlab.tasks import Example

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INSTRUCTION, CUE = "Write a one-line headline for this BBC news article.", "Headline:"
# any Unicode except lone surrogates (not encodable as UTF-8, so no tokenizer input); biased to
# multi-byte characters, whitespace and control characters, where byte-level BPE is fragile
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=300) | st.text(
    st.sampled_from("aé 日本語 \n\t🙂\u200b\u0301ßİ\x00"), max_size=200)


@functools.lru_cache(maxsize=1)
def tokenizer():
    from prefixlab.training.model_loading import load_tokenizer

    return load_tokenizer("embedded:smollm2-135m-instruct")


def formatter(style: str, max_source: int, max_target: int) -> PromptFormatter:
    return PromptFormatter(tokenizer(), INSTRUCTION, CUE, style, max_source, max_target,
                           is_encoder_decoder=style == "source")


def source_ids(text: str) -> list[int]:
    return tokenizer()(text, add_special_tokens=False)["input_ids"]


@FUZZ
@given(source=texts, target=texts, style=st.sampled_from(["chat", "plain", "source"]),
       max_source=st.integers(1, 40), max_target=st.integers(1, 12))
def test_formatting_any_text_truncates_as_configured(source, target, style, max_source, max_target):
    fmt, vocab = formatter(style, max_source, max_target), len(tokenizer())
    prompt, target_ids = fmt.prompt_ids(source), fmt.target_ids(target)
    assert all(0 <= i < vocab for i in prompt + target_ids)
    # the target: its own tokens cut to max_target_tokens, then exactly one EOS (also for an empty target)
    eos = tokenizer().eos_token_id
    assert target_ids[-1] == eos and 1 <= len(target_ids) <= max_target + 1
    if style != "source":
        assert target_ids[:-1] == source_ids(target if style == "chat" else " " + target)[:max_target]
    # the source: unchanged when short enough, else cut to at most max_source_tokens tokens at a
    # clean point (never inside a multi-byte character)
    ids = source_ids(source)
    kept = fmt._truncated_source(source)
    if len(ids) <= max_source:
        assert kept == source
    else:
        assert len(source_ids(kept)) <= max_source
        assert source.startswith(kept) or not kept.endswith("\ufffd")
        assert kept == tokenizer().decode(ids[: len(source_ids(kept))]) or source.startswith(kept)
    assert prompt == formatter(style, 10**6, max_target).prompt_ids(kept)


def encoded(sources, targets, style, max_source=24, max_target=8):
    fmt = formatter(style, max_source, max_target)
    return [EncodedExample(Example(id=f"ex{i}", source=s, target=t, references=(t,)), fmt.prompt_ids(s), fmt.target_ids(t))
            for i, (s, t) in enumerate(zip(sources, targets))]


batches = st.integers(1, 4).flatmap(lambda n: st.tuples(st.lists(texts, min_size=n, max_size=n),
                                                       st.lists(texts, min_size=n, max_size=n)))


@FUZZ
@given(batch=batches, style=st.sampled_from(["chat", "plain"]))
def test_decoder_batches_hold_exactly_the_targets_and_mask_the_padding(batch, style):
    examples = encoded(*batch, style)
    pad = tokenizer().pad_token_id
    out = collate(examples, pad)
    rows, width = len(examples), max(len(e.prompt_ids) + len(e.target_ids) for e in examples)
    assert out["input_ids"].shape == out["attention_mask"].shape == out["labels"].shape == (rows, width)
    assert out["prompt_ids"].shape == out["prompt_mask"].shape == (rows, max(len(e.prompt_ids) for e in examples))
    for row, e in enumerate(examples):
        full, n_target = e.prompt_ids + e.target_ids, len(e.target_ids)
        padding = width - len(full)  # left padding
        assert out["input_ids"][row, padding:].tolist() == full
        assert out["attention_mask"][row].tolist() == [0] * padding + [1] * len(full)
        assert out["labels"][row, width - n_target:].tolist() == e.target_ids  # the loss sees exactly the target
        assert (out["labels"][row, : width - n_target] == IGNORE_INDEX).all()  # never the prompt or padding
        prompt_pad = out["prompt_ids"].shape[1] - len(e.prompt_ids)
        assert out["prompt_ids"][row, prompt_pad:].tolist() == e.prompt_ids
        assert out["prompt_mask"][row].tolist() == [0] * prompt_pad + [1] * len(e.prompt_ids)
    assert out["ids"] == [e.example.id for e in examples]


@FUZZ
@given(batch=batches)
def test_encoder_decoder_batches_hold_exactly_the_targets_and_mask_the_padding(batch):
    examples = encoded(*batch, "source")
    out = collate_seq2seq(examples, tokenizer().pad_token_id)
    rows = len(examples)
    source_width = max(len(e.prompt_ids) for e in examples)
    assert out["input_ids"].shape == out["attention_mask"].shape == (rows, source_width)
    assert out["labels"].shape == (rows, max(len(e.target_ids) for e in examples))
    for row, e in enumerate(examples):
        n = len(e.prompt_ids)  # right padding
        assert out["input_ids"][row, :n].tolist() == e.prompt_ids
        assert out["attention_mask"][row].tolist() == [1] * n + [0] * (source_width - n)
        labels = out["labels"][row].tolist()
        assert labels[: len(e.target_ids)] == e.target_ids
        assert all(label == IGNORE_INDEX for label in labels[len(e.target_ids):])
    assert torch.equal(out["prompt_ids"], out["input_ids"])


def test_truncating_inside_a_multibyte_character_stays_within_max_source_tokens():
    """Regression: truncation decoded the first N tokens and re-encoded them; a cut inside a
    multi-byte character decoded to U+FFFD and re-encoded to more than max_source_tokens."""
    source = ("Le président a déclaré mercredi que l'économie européenne était à un tournant. "
              "日本の首相は東京で記者会見を開いた。")
    for max_source in range(1, 60):
        prompt = formatter("chat", max_source, 8).prompt_ids(source)
        unlimited_empty = formatter("chat", max_source, 8).prompt_ids("")
        assert "\ufffd" not in tokenizer().decode(prompt), max_source
        assert len(prompt) - len(unlimited_empty) <= max_source + 1, max_source
