"""EncoderTaskModule on a tiny random BERT (MiniLM's config and tokenizer, 2 layers of width 32):
what trains, what stays frozen, what the head and the prefix do, what a checkpoint and an export hold."""

from __future__ import annotations

import pytest
import torch

from prefixlab.data.encoder_data import CLASSIFICATION, EXTRACTIVE, collate_encoder, encode_classification, encode_span
from prefixlab.training.encoder_module import EncoderTaskModule, attach_export, load_encoder_export
from prefixlab.engine.export import load_prefix
from prefixlab.training.model_loading import MINILM, load_tokenizer
from prefixlab.tasks import Example
from prefixlab.tasks.spans import SpanExample

TINY_ENCODER = {
    "name_or_path": MINILM, "dtype": "float32", "attn_implementation": "sdpa", "random_init": True,
    "config_overrides": {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                         # larger random weights: at 0.02 a random encoder is nearly constant in its input
                         "initializer_range": 0.2},
}
METHODS = {
    "prefix": {"name": "prefix", "prefix_length": 3, "mid_dim": 16, "mlp_layers": 1, "dropout": 0.0, "init_std": 0.02,
               "init": "random", "init_text": "", "prefix_sites": None},
    "prefix_flat": {"name": "prefix_flat", "prefix_length": 3, "mid_dim": None, "mlp_layers": 1, "dropout": 0.0,
                    "init_std": 0.5, "init": "random", "init_text": "", "prefix_sites": None},
    "head": {"name": "head", "prefix_length": 3, "mid_dim": None, "mlp_layers": 1, "dropout": 0.0, "init_std": 0.02,
             "init": "random", "init_text": "", "prefix_sites": None},
}
OPTIM = {"lr": 5e-2, "weight_decay": 0.0, "warmup_steps": 0, "betas": [0.9, 0.999]}
LABELS = ["business", "sports", "tech"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MINILM)


def build(method: str, kind: str, seed: int = 0) -> EncoderTaskModule:
    torch.manual_seed(seed)
    return EncoderTaskModule(TINY_ENCODER, METHODS[method], OPTIM, "test_task", kind,
                             labels=LABELS if kind == CLASSIFICATION else None, max_steps=10)


def classification_batch(tokenizer) -> dict:
    texts = [("Shares rise on strong results", "business"), ("Late goal wins the cup final", "sports"),
             ("New chip doubles battery life", "tech"), ("Bank cuts interest rates again", "business")]
    encoded = [encode_classification(tokenizer, Example(str(i), t, y, (y,)), tuple(LABELS), 32, "test")
               for i, (t, y) in enumerate(texts)]
    return collate_encoder(encoded, tokenizer.pad_token_id)


def span_batch(tokenizer) -> dict:
    context = "The capital of France is Paris. The people of France are called French."
    examples = [SpanExample("a", "What is the capital of France?", context, context.index("Paris"), "Paris", ("Paris",)),
                SpanExample("b", "What are they called?", context, context.index("French"), "French", ("French",))]
    return collate_encoder([encode_span(tokenizer, e, 48, "test") for e in examples], tokenizer.pad_token_id)


def batch_for(kind, tokenizer):
    return classification_batch(tokenizer) if kind == CLASSIFICATION else span_batch(tokenizer)


def outputs(module, batch) -> torch.Tensor:
    out = module(batch)
    return out.logits if module.hparams.kind == CLASSIFICATION else torch.stack([out.start_logits, out.end_logits], -1)


def frozen_named(module):
    return {n: p for n, p in module.prefixed.model.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("method", ["prefix", "prefix_flat", "head"])
@pytest.mark.parametrize("kind", [CLASSIFICATION, EXTRACTIVE])
def test_only_prefix_and_head_train_and_the_encoder_stays_bit_identical(method, kind, tokenizer):
    module = build(method, kind)
    batch = batch_for(kind, tokenizer)
    head_names = {"classifier.weight", "classifier.bias"} if kind == CLASSIFICATION else {"qa_outputs.weight", "qa_outputs.bias"}
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    expected_head = {f"prefixed.model.{n}" for n in head_names}
    assert expected_head <= trainable
    assert all(n.startswith("prefixed.prefix_encoder.") for n in trainable - expected_head)
    assert (len(trainable - expected_head) > 0) == (method != "head")
    before = {n: p.detach().clone() for n, p in frozen_named(module).items()}
    assert len(before) > 20  # embeddings, layers, pooler
    trained_before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = module._loss(batch, module(batch))
        loss.backward()
        for name, p in module.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
            else:
                assert p.grad is None, name
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert not module.prefixed.model.training  # no dropout in the frozen encoder or head, also in train()
    for name, p in frozen_named(module).items():
        assert torch.equal(p, before[name]), name
    for name, p in module.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, trained_before[name]), f"{name} did not train"


@pytest.mark.parametrize("kind", [CLASSIFICATION, EXTRACTIVE])
def test_the_head_and_the_prefix_each_change_the_output(kind, tokenizer):
    module = build("prefix_flat", kind).eval()
    batch = batch_for(kind, tokenizer)
    with torch.no_grad():
        with_both = outputs(module, batch)
        out = module.prefixed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), prefix=None)
        without_prefix = out.logits if kind == CLASSIFICATION else torch.stack([out.start_logits, out.end_logits], -1)
        assert (with_both - without_prefix).abs().max() > 0.05 * without_prefix.abs().max()
        other = build("prefix_flat", kind, seed=0)
        other.prefixed.prefix_encoder.load_state_dict(module.prefixed.prefix_encoder.state_dict())
        for p in other.prefixed.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))  # another head, same encoder and prefix
        assert (outputs(other.eval(), batch) - with_both).abs().max() > 0.05 * with_both.abs().max()


def test_checkpoint_state_holds_only_the_trainable_tensors():
    module = build("prefix", CLASSIFICATION)
    state = module.state_dict()
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert set(state) == trainable | {n for n in state if n.startswith("prefixed.prefix_encoder.")}
    assert not any(k.startswith("prefixed.model.bert.") for k in state)
    assert {"prefixed.model.classifier.weight", "prefixed.model.classifier.bias"} <= set(state)
    # a fresh module takes the state back (frozen encoder rebuilt from its name, so not in the state)
    fresh = build("prefix", CLASSIFICATION, seed=1)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("prefixed.model.bert.") for k in missing)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("method, kind", [("prefix", CLASSIFICATION), ("prefix_flat", EXTRACTIVE), ("head", CLASSIFICATION)])
def test_export_reproduces_the_trained_outputs(method, kind, tokenizer, tmp_path):
    module = build(method, kind)
    batch = batch_for(kind, tokenizer)
    optimizer = module.configure_optimizers()["optimizer"]
    for _ in range(2):
        optimizer.zero_grad()
        module._loss(batch, module(batch)).backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        expected = outputs(module, batch)
    module.export(tmp_path / "export")
    files = {p.name for p in (tmp_path / "export").iterdir()}
    with_prefix = {"prefix.safetensors", "prefix_config.json"}
    assert {"head.safetensors", "head_config.json"} <= files and (with_prefix <= files) == (method != "head")
    if method != "head":
        assert load_prefix(tmp_path / "export").activations.sites["encoder_self"].keys.shape == (2, 1, 4, 3, 8)

    # the same frozen encoder (same seed) with a fresh, different head: the export makes it the trained model again
    other = build(method, kind, seed=0).eval()
    assert all(torch.equal(p, frozen_named(module)[n]) for n, p in frozen_named(other).items())
    with torch.no_grad():
        for p in other.prefixed.model.parameters():
            if p.requires_grad:
                p.normal_()
    prefix = attach_export(other.prefixed.model, tmp_path / "export")
    assert (prefix is None) == (method == "head")
    with torch.no_grad():
        out = other.prefixed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), prefix=prefix)
    got = out.logits if kind == CLASSIFICATION else torch.stack([out.start_logits, out.end_logits], -1)
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.embedded
def test_minilm_export_reloads_from_the_embedded_model(tokenizer, tmp_path):
    """The real MiniLM: train a prefix + span head a few steps, export, reload by name, same outputs."""
    model = {"name_or_path": MINILM, "dtype": "float32", "attn_implementation": "sdpa", "random_init": False,
             "config_overrides": {}}
    torch.manual_seed(0)
    module = EncoderTaskModule(model, METHODS["prefix"], {**OPTIM, "lr": 1e-2}, "test_task", EXTRACTIVE, max_steps=5)
    batch = span_batch(tokenizer)
    optimizer = module.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = module._loss(batch, module(batch))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    module.eval()
    with torch.no_grad():
        expected = outputs(module, batch)
    module.export(tmp_path / "export")
    wrapped, prefix, _, config = load_encoder_export(tmp_path / "export")
    assert config["kind"] == EXTRACTIVE and config["model_class"] == "BertForQuestionAnswering"
    with torch.no_grad():
        out = wrapped(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), prefix=prefix)
    assert torch.allclose(torch.stack([out.start_logits, out.end_logits], -1), expected, atol=1e-5)


def test_an_answer_cut_off_by_truncation_adds_no_loss(tokenizer):
    module = build("prefix_flat", EXTRACTIVE).eval()
    context = "The capital of France is Paris. " * 3 + "The people of France are called French."
    inside = SpanExample("a", "What is the capital?", context, context.index("Paris"), "Paris", ("Paris",))
    cut = SpanExample("b", "What are they called?", context, context.index("French."), "French", ("French",))
    short = SpanExample("c", "Capital?", "Paris.", 0, "Paris", ("Paris",))
    encoded = [encode_span(tokenizer, e, 24, "test") for e in (inside, cut)]
    assert encoded[0].start is not None and encoded[1].start is None
    with torch.no_grad():  # an example's loss does not depend on the padding its batch adds
        padded = collate_encoder([encode_span(tokenizer, short, 24, "test"), encoded[0]], tokenizer.pad_token_id)
        single = collate_encoder([encode_span(tokenizer, short, 24, "test")], tokenizer.pad_token_id)
        assert padded["input_ids"].shape[1] > single["input_ids"].shape[1]
        out = module(padded)
        first = {k: v[:1] for k, v in padded.items() if torch.is_tensor(v)}
        assert torch.allclose(module._loss(first, type(out)(start_logits=out.start_logits[:1], end_logits=out.end_logits[:1])),
                              module._loss(single, module(single)), atol=1e-5)
    with torch.no_grad():
        both = collate_encoder(encoded, tokenizer.pad_token_id)
        alone = collate_encoder(encoded[:1], tokenizer.pad_token_id)
        assert torch.allclose(module._loss(both, module(both)), module._loss(alone, module(alone)), atol=1e-6)
        only_cut = collate_encoder(encoded[1:], tokenizer.pad_token_id)
        assert module._loss(only_cut, module(only_cut)) is None


def test_gradient_checkpointing_keeps_dropout_off_in_the_encoder(tokenizer):
    """The encoder path of tests/training/test_training_invariants.py::test_gradient_checkpointing_keeps_dropout_off:
    with model.gradient_checkpointing=true the encoder (dropout 0.1) stays in eval mode, its layers
    are recomputed in backward, and loss and gradients equal those without checkpointing."""
    batch = classification_batch(tokenizer)
    runs = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        module = EncoderTaskModule({**TINY_ENCODER, "gradient_checkpointing": checkpointing}, METHODS["prefix"], OPTIM,
                                   "test_task", CLASSIFICATION, labels=LABELS, max_steps=10)
        module.train()
        encoder = module.prefixed.model
        assert encoder.config.hidden_dropout_prob > 0 and encoder.is_gradient_checkpointing is checkpointing
        assert not [name for name, m in encoder.named_modules() if m.training]
        calls = [0]
        for m in encoder.modules():
            if type(m).__name__.endswith("SelfAttention"):
                m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        losses = []
        for _ in range(3):
            module.zero_grad()
            calls[0] = 0
            loss = module._loss(batch, module(batch))
            forward_calls = calls[0]
            loss.backward()
            losses.append(loss.item())
            assert forward_calls > 0 and calls[0] == forward_calls * (2 if checkpointing else 1)
        assert losses[0] == losses[1] == losses[2], losses
        runs[checkpointing] = losses[0], [p.grad.clone() for p in module.parameters() if p.requires_grad]
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-6)
    for plain, checkpointed in zip(runs[False][1], runs[True][1]):
        assert torch.allclose(checkpointed, plain, atol=1e-6)
