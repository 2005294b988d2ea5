"""Prefixes on encoder-only models (P-tuning v2): BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT.

Tiny random models from configs for sequence classification and extractive QA, plus one test
on the real embedded MiniLM (``@pytest.mark.embedded``).
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

from prefixlab.engine.families import adapter_for
from prefixlab.engine.injection import PrefixActivations
from prefixlab.engine.parameterization import FlatPrefix, MLPPrefix
from prefixlab.engine.prefixed_encoder import PrefixedEncoder, trainable_head_parameters

VOCAB = 99
FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert")
TASKS = ("classification", "qa")
IMPLEMENTATIONS = ("sdpa", "eager")
ATOL = 1e-5



def _config(family: str):
    # initializer_range 0.2 (default 0.02): at the default the random encoders are nearly constant
    # functions of their input and any change (a prefix, a leak) hides under 1e-3.
    common = dict(vocab_size=VOCAB, max_position_embeddings=64, initializer_range=0.2)
    bert_like = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **common)
    if family == "bert":
        return BertConfig(**bert_like)
    if family == "roberta":
        return RobertaConfig(pad_token_id=1, **bert_like)
    if family == "xlm-roberta":
        return XLMRobertaConfig(pad_token_id=1, **bert_like)
    if family == "electra":
        return ElectraConfig(embedding_size=16, **bert_like)
    if family == "distilbert":
        return DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **common)
    raise ValueError(family)


def build_encoder(family: str, task: str, attn_implementation: str = "sdpa", seed: int = 0):
    torch.manual_seed(seed)
    config = _config(family)
    if task == "classification":
        config.num_labels = 3
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForQuestionAnswering.from_config(config)
    model.set_attn_implementation(attn_implementation)
    return model.eval()


def _outputs(out, task: str) -> torch.Tensor:
    """[batch, num_labels] for classification; [batch, seq, 2] (start, end) for QA."""
    return out.logits if task == "classification" else torch.stack([out.start_logits, out.end_logits], dim=-1)


def _batch(model, lengths=(7, 4, 6), seed: int = 1):
    """Right-padded ids and mask (padding with the model's pad token)."""
    pad = model.config.pad_token_id or 0
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, VOCAB, (n,), generator=gen)
        mask[i, :n] = 1
    return ids, mask


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Clearly different, relative to the size of ``b`` (random heads give logits ~1e-2)."""
    return bool((a - b).abs().max() > 0.05 * b.abs().max())


def _flat(model, prefix_length: int = 3, seed: int = 2) -> FlatPrefix:
    torch.manual_seed(seed)
    return FlatPrefix(adapter_for(model).geometry(model), prefix_length, init_std=0.5)


# --------------------------------------------------------------------------- adapter


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_binds_the_module_that_calls_the_attention_function(family):
    model = build_encoder(family, "classification")
    adapter = adapter_for(model)
    assert not adapter.is_encoder_decoder and not adapter.shift_positions
    modules = adapter.attention_modules(model)
    assert [s.value for s in modules] == ["encoder_self"]
    base = model.base_model
    layers = base.transformer.layer if family == "distilbert" else base.encoder.layer
    expected = [layer.attention if family == "distilbert" else layer.attention.self for layer in layers]
    assert all(a is b for a, b in zip(modules["encoder_self"], expected, strict=True))
    g = adapter.geometry(model).sites["encoder_self"]
    assert (g.num_layers, g.num_kv_heads, g.head_dim) == (2, 4, 8)

    # the bound module is the one handed to the attention function
    PrefixedEncoder(model)
    seen = []
    for m in modules["encoder_self"]:
        m.register_forward_hook(lambda mod, args, out: seen.append(getattr(mod, "_prefixlab_binding", None)))
    ids, mask = _batch(model)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert [b[1:] for b in seen] == [("encoder_self", 0), ("encoder_self", 1)]


def test_encoder_decoder_model_is_refused():
    from transformers import BartConfig, BartForSequenceClassification

    config = BartConfig(
        vocab_size=VOCAB, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, max_position_embeddings=32,
    )
    with pytest.raises(ValueError, match="encoder-only"):
        PrefixedEncoder(BartForSequenceClassification(config))


# --------------------------------------------------------------------------- on / off


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_changes_outputs_and_none_is_the_plain_model(family, task, attn_implementation):
    model = build_encoder(family, task, attn_implementation)
    ids, mask = _batch(model)
    extra = {"token_type_ids": (torch.arange(ids.shape[1]) >= 3).long().expand_as(ids)} if family == "bert" else {}
    with torch.no_grad():
        before = _outputs(model(input_ids=ids, attention_mask=mask, **extra), task)
    wrapped = PrefixedEncoder(model, _flat(model)).eval()
    with torch.no_grad():
        assert torch.equal(_outputs(wrapped(ids, mask, prefix=None, **extra), task), before)
        with_prefix = _outputs(wrapped(ids, mask, **extra), task)
    assert _differs(with_prefix, before)
    wrapped.injector.detach()
    with torch.no_grad():
        assert torch.equal(_outputs(model(input_ids=ids, attention_mask=mask, **extra), task), before)


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_padded_rows_equal_rows_alone(family, task, attn_implementation):
    model = build_encoder(family, task, attn_implementation)
    wrapped = PrefixedEncoder(model, _flat(model)).eval()
    lengths = (7, 4, 6)
    ids, mask = _batch(model, lengths)
    with torch.no_grad():
        batched = _outputs(wrapped(ids, mask), task)
        for i, n in enumerate(lengths):
            alone = _outputs(wrapped(ids[i : i + 1, :n], mask[i : i + 1, :n]), task)[0]
            got = batched[i] if task == "classification" else batched[i, :n]
            assert torch.allclose(got, alone, atol=ATOL), (i, (got - alone).abs().max())


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_encoder_only_prefix_and_head_get_gradients(family, task):
    model = build_encoder(family, task)
    for p in model.parameters():
        p.requires_grad_(False)
    head = trainable_head_parameters(model)
    for p in head:
        p.requires_grad_(True)
    torch.manual_seed(3)
    prefix = MLPPrefix(adapter_for(model).geometry(model), prefix_length=3, embed_dim=8, mid_dim=16)
    wrapped = PrefixedEncoder(model, prefix)
    wrapped.train()
    ids, mask = _batch(model)
    if task == "classification":
        out = wrapped(ids, mask, labels=torch.tensor([0, 2, 1]))
    else:
        out = wrapped(ids, mask, start_positions=torch.tensor([1, 0, 2]), end_positions=torch.tensor([3, 2, 5]))
    out.loss.backward()

    head_ids = {id(p) for p in head}
    for name, p in prefix.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in model.named_parameters():
        if id(p) in head_ids:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    head_names = {n.split(".")[0] for n, p in model.named_parameters() if id(p) in head_ids}
    expected = {"classifier", "pre_classifier"} if (family, task) == ("distilbert", "classification") else (
        {"classifier"} if task == "classification" else {"qa_outputs"}
    )
    assert head_names == expected


def test_trainable_head_parameters_refuses_a_headless_model():
    from transformers import BertModel

    with pytest.raises(ValueError, match="no task head"):
        trainable_head_parameters(BertModel(_config("bert")))


def test_per_example_prefix_without_one_site_key_is_plain():
    """A PrefixActivations without ``encoder_self`` leaves the model plain (the site switch)."""
    model = build_encoder("bert", "classification")
    ids, mask = _batch(model)
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        wrapped = PrefixedEncoder(model, _flat(model))
        assert torch.equal(wrapped(ids, mask, prefix=PrefixActivations({})).logits, before)


# --------------------------------------------------------------------------- the real MiniLM


@pytest.mark.embedded
def test_minilm_prefix_trains_with_the_encoder_frozen():
    from transformers import AutoTokenizer

    from prefixlab.training.model_loading import resolve

    path = resolve("embedded:all-minilm-l6-v2")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=5)  # head newly initialized
    tokenizer = AutoTokenizer.from_pretrained(path)
    geometry = adapter_for(model).geometry(model)
    g = geometry.sites["encoder_self"]
    assert list(geometry.sites) == ["encoder_self"]
    assert (g.num_layers, g.num_kv_heads, g.head_dim) == (6, 12, 32)

    for p in model.parameters():
        p.requires_grad_(False)
    head = trainable_head_parameters(model)
    for p in head:
        p.requires_grad_(True)
    head_ids = {id(p) for p in head}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in head_ids}
    assert len(frozen) > 90  # the whole encoder and pooler

    torch.manual_seed(1)
    prefix = MLPPrefix(geometry, prefix_length=4, embed_dim=32, mid_dim=32)
    wrapped = PrefixedEncoder(model, prefix).eval()  # eval: no dropout, so the loss curve is deterministic
    batch = tokenizer(["a short sentence about cats", "another example, longer than the first one"],
                      padding=True, return_tensors="pt")
    labels = torch.tensor([1, 3])

    with torch.no_grad():
        plain = wrapped(**batch, prefix=None).logits
        prefixed = wrapped(**batch).logits
    assert _differs(prefixed, plain)

    optimizer = torch.optim.AdamW([*prefix.parameters(), *head], lr=1e-2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = wrapped(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    for name, p in model.named_parameters():
        if id(p) not in head_ids:
            assert torch.equal(p, frozen[name]), name
            assert p.grad is None, name


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_prefix_gradients(use_reentrant):
    def grads(checkpointing: bool):
        model = build_encoder("bert", "classification")
        for p in model.parameters():
            p.requires_grad_(False)
        torch.manual_seed(4)
        prefix = MLPPrefix(adapter_for(model).geometry(model), prefix_length=3, embed_dim=8, mid_dim=16)
        wrapped = PrefixedEncoder(model, prefix)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
        wrapped.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        ids, mask = _batch(model)
        wrapped(ids, mask, labels=torch.tensor([0, 2, 1])).loss.backward()
        return {n: p.grad.clone() for n, p in prefix.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    for name, grad in plain.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(checkpointed[name], grad, atol=1e-6), name
