"""Real-word initialization: a prefix initialized from words equals typing the words."""

import pytest
import torch

from prefixlab.engine.initialization import initialize_from_activations, word_activations
from prefixlab.engine.parameterization import FlatPrefix, MLPPrefix, site_prefix_to_rows
from prefixlab.engine.prefixed_lm import PrefixedCausalLM

from .conftest import build_lm


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("form", ["flat", "mlp"])
def test_text_initialized_prefix_equals_the_words_typed_before_the_input(family, form):
    lm = build_lm(family)
    model = PrefixedCausalLM(lm)
    words = [11, 12, 13, 14, 15]
    activations = word_activations(lm, words)
    if form == "flat":
        encoder = FlatPrefix(model.geometry, prefix_length=5)
    else:
        encoder = MLPPrefix(model.geometry, prefix_length=5, embed_dim=32, mid_dim=64)
    initialize_from_activations(encoder, activations)
    model.prefix_encoder = encoder

    # the initial prefix equals the activations (the MLP's exactly-solved last layer too)
    expected = site_prefix_to_rows(activations.sites["decoder_self"].keys[:, 0], activations.sites["decoder_self"].values[:, 0])
    produced = encoder().sites["decoder_self"]
    assert torch.allclose(site_prefix_to_rows(produced.keys[:, 0], produced.values[:, 0]), expected, atol=1e-4)

    ids = torch.randint(20, 101, (2, 6))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        with_prefix = model(ids, mask).logits
        typed = model(torch.cat([torch.tensor([words] * 2), ids], 1), torch.ones(2, 11, dtype=torch.long), prefix=None).logits
    assert torch.allclose(with_prefix, typed[:, 5:], atol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_embedding_prompt_equals_prepending_the_embeddings_at_the_input(family):
    from prefixlab.engine.parameterization import EmbeddingPrompt

    lm = build_lm(family)
    model = PrefixedCausalLM(lm)
    prompt = EmbeddingPrompt(lm, prompt_length=4)
    with torch.no_grad():
        prompt.embeddings.normal_()
    model.prefix_encoder = prompt
    ids = torch.randint(1, 101, (2, 6))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = model(ids, mask).logits
        embeds = torch.cat([prompt.embeddings[None].expand(2, -1, -1), lm.get_input_embeddings()(ids)], 1)
        reference = lm(inputs_embeds=embeds, attention_mask=torch.ones(2, 10, dtype=torch.long)).logits[:, 4:]
    assert torch.allclose(ours, reference, atol=1e-5)
    # gradients reach the embeddings through the frozen LM, and only them
    lm.requires_grad_(False)
    model(ids, mask, labels=ids).loss.backward()
    assert prompt.embeddings.grad is not None and prompt.embeddings.grad.abs().sum() > 0
    assert all(p.grad is None for p in lm.parameters())
