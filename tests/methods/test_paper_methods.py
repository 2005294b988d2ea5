"""The paper's own methods, as the original PrefixTuning code runs them, each against a small
hand-built reference (issue 16, item 2); prefixlab's earlier variants stay as named switches.

* real-word init: " <phrase>" once, the prefix as long as its tokens, the MLP fitted by MSE
  (``method.init_fill``, ``method.init_fit``);
* EMB-k through an MLP (``method.mid_dim``; null: the raw embeddings);
* FT-top2 training the tied embedding (``method.train_tied_embedding``);
* Lin et al. (2020) adapters: a layer norm inside, at the block output (``method.adapter_style``).
"""

from __future__ import annotations

import copy

import pytest
import torch
import tiny_models
from torch.nn import functional as F

from prefixlab.config import ConfigError, TrainConfig, validate
from prefixlab.engine.bottleneck_adapters import (
    CHILD, AdapterError, attach_adapters, bottleneck_for_percent, load_adapters, parameters_per_adapter, save_adapters,
)
from prefixlab.engine.initialization import init_token_ids, word_activations
from prefixlab.engine.parameterization import site_prefix_to_rows
from prefixlab.engine.families import adapter_for
from prefixlab.methods import build_prefix_encoder, unfreeze_for
from prefixlab.methods.bottleneck import AdapterOptions
from prefixlab.methods.finetune import TopLayersOptions
from prefixlab.methods.prefix import PhraseLengthMismatch, PrefixOptions
from prefixlab.tasks.bbc_news import BBCHeadlineOptions

from tests.pipeline.helpers import PREFIX_METHOD, TINY_MODEL, load_tiny_lm

def _cfg(method) -> TrainConfig:
    cfg = TrainConfig(method=method, task=BBCHeadlineOptions(name="bbc_headline"))
    cfg.logger.csv = True  # validate wants one logger on
    return cfg


PAPER_INIT = {"init": "text", "init_fill": "phrase_length", "init_fit": "mse", "init_fit_steps": 500, "init_fit_lr": 1e-4}


def _geometry(lm):
    return adapter_for(lm).geometry(lm)  # without attaching an injector: the module-wide LM is reused


def _rows(site_prefix) -> torch.Tensor:
    return site_prefix_to_rows(site_prefix.keys[:, 0], site_prefix.values[:, 0])


@pytest.fixture(scope="module")
def smollm_tiny():
    """The tiny random SmolLM2-shaped LM with the real SmolLM2 tokenizer (real words, real token counts)."""
    from prefixlab.training.model_loading import load_tokenizer

    torch.manual_seed(0)
    return load_tiny_lm().eval(), load_tokenizer(TINY_MODEL["name_or_path"])


# ---- real-word initialization ------------------------------------------------------------------
def test_phrase_length_fill_is_the_phrase_once_after_a_leading_space(smollm_tiny):
    _, tokenizer = smollm_tiny
    spaced = tokenizer(" table-to-text:", add_special_tokens=False)["input_ids"]
    bare = tokenizer("table-to-text:", add_special_tokens=False)["input_ids"]
    assert spaced != bare  # the space makes other tokens: the test can tell the two apart
    assert init_token_ids(tokenizer, "table-to-text:", len(spaced), fill="phrase_length") == spaced
    # the earlier variant stays: no space, repeated to fill the prefix
    assert init_token_ids(tokenizer, "table-to-text:", 2 * len(bare) + 1, fill="repeat") == (bare * 3)[:2 * len(bare) + 1]


def test_phrase_length_fill_refuses_another_prefix_length_naming_the_count(smollm_tiny):
    lm, tokenizer = smollm_tiny
    count = len(tokenizer(" table-to-text:", add_special_tokens=False)["input_ids"])
    method = {**PREFIX_METHOD, **PAPER_INIT, "init_text": "table-to-text:", "prefix_length": count + 1}
    with pytest.raises(PhraseLengthMismatch, match=f"set method.prefix_length={count} "):
        build_prefix_encoder(method, _geometry(lm), lm, tokenizer)


def test_mse_fit_brings_the_mlp_output_to_the_words_activations(smollm_tiny):
    lm, tokenizer = smollm_tiny
    ids = tokenizer(" summarize the news", add_special_tokens=False)["input_ids"]
    target = _rows(word_activations(lm, ids).sites["decoder_self"])
    geometry = _geometry(lm)
    method = {**PREFIX_METHOD, **PAPER_INIT, "init_text": "summarize the news", "prefix_length": len(ids)}
    torch.manual_seed(1)
    unfitted = build_prefix_encoder({**method, "init": "random"}, geometry, lm, tokenizer)
    torch.manual_seed(1)  # the same MLP before its fit
    fitted = build_prefix_encoder(method, geometry, lm, tokenizer)
    before = F.mse_loss(_rows(unfitted().sites["decoder_self"]), target).item()
    after = F.mse_loss(_rows(fitted().sites["decoder_self"]), target).item()
    assert fitted.prefix_length == len(ids)
    # 500 Adam steps at 1e-4 (the original's budget), mid_dim 32: measured 0.098 -> 0.0018, the target's mean
    # square 0.024 (the fit explains ~93% of it)
    assert after < 0.05 * before and after < 0.1 * target.pow(2).mean().item(), (before, after)
    # the fit moves the MLP only (as the original's optimizer over control_trans), not its input table
    assert torch.equal(fitted.embeddings["decoder_self"].weight, unfitted.embeddings["decoder_self"].weight)
    # init_fit=exact: the least-squares last layer gives the activations themselves
    exact = build_prefix_encoder({**method, "init_fit": "exact"}, geometry, lm, tokenizer)
    assert torch.allclose(_rows(exact().sites["decoder_self"]), target, atol=1e-4)


def test_a_method_dict_without_the_new_keys_keeps_the_earlier_init(smollm_tiny):
    """A checkpoint's hparams from before init_fill existed: repeat-filled, exactly fitted, as it was trained."""
    lm, tokenizer = smollm_tiny
    method = {**PREFIX_METHOD, "init": "text", "init_text": "summarize", "prefix_length": 4}
    encoder = build_prefix_encoder(method, _geometry(lm), lm, tokenizer)
    expected = _rows(word_activations(lm, init_token_ids(tokenizer, "summarize", 4, fill="repeat")).sites["decoder_self"])
    assert torch.allclose(_rows(encoder().sites["decoder_self"]), expected, atol=1e-4)


# ---- EMB-k through an MLP ----------------------------------------------------------------------
def test_embedding_through_an_mlp_equals_the_lm_over_the_mlps_output(smollm_tiny):
    lm, tokenizer = smollm_tiny
    lm.requires_grad_(False)
    method = {**PREFIX_METHOD, "name": "embedding", "prefix_length": 3, "mid_dim": 16}
    prompt = build_prefix_encoder(method, _geometry(lm), lm, tokenizer)
    names = {n for n, p in prompt.named_parameters() if p.requires_grad}
    assert names == {"embeddings", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}
    # by hand: Linear -> Tanh -> Linear over the table, then the LM reads the result as 3 input embeddings
    first, last = prompt.mlp[0], prompt.mlp[2]
    by_hand = F.linear(torch.tanh(F.linear(prompt.embeddings, first.weight, first.bias)), last.weight, last.bias)
    cache = lm(inputs_embeds=by_hand[None], attention_mask=torch.ones(1, 3, dtype=torch.long), use_cache=True).past_key_values
    ours = prompt().sites["decoder_self"]
    assert torch.allclose(ours.keys, torch.stack([layer.keys for layer in cache.layers]), atol=1e-5)
    assert torch.allclose(ours.values, torch.stack([layer.values for layer in cache.layers]), atol=1e-5)
    # the gradient goes through the MLP to the table
    (ours.keys.sum() + ours.values.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prompt.parameters())
    # mid_dim null: the raw form, the embeddings themselves
    raw = build_prefix_encoder({**method, "mid_dim": None}, _geometry(lm), lm, tokenizer)
    assert raw.mlp is None and [n for n, _ in raw.named_parameters()] == ["embeddings"]


def test_embedding_mlp_text_init_outputs_the_words_embeddings(smollm_tiny):
    lm, tokenizer = smollm_tiny
    ids = tokenizer(" summarize", add_special_tokens=False)["input_ids"]
    words = lm.get_input_embeddings().weight[ids].detach()
    method = {**PREFIX_METHOD, **PAPER_INIT, "name": "embedding", "prefix_length": len(ids), "mid_dim": 16,
              "init_text": "summarize", "init_fit": "exact"}
    prompt = build_prefix_encoder(method, _geometry(lm), lm, tokenizer)
    assert torch.allclose(prompt.input_embeddings(), words, atol=1e-4)


def test_embedding_mid_dim_is_a_switch_in_validation():
    def cfg(mid_dim):
        return _cfg(PrefixOptions(name="embedding", mid_dim=mid_dim))

    validate(cfg(512))
    validate(cfg(None))
    with pytest.raises(ConfigError, match="method.mid_dim=0"):
        validate(cfg(0))


# ---- FT-top2 trains the tied embedding ---------------------------------------------------------
@pytest.mark.parametrize("train_tied", [True, False])
def test_finetune_topk_trains_the_tied_embedding_as_the_original(train_tied):
    lm = tiny_models.build_lm("gpt2").train()
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight  # GPT-2's tied wte
    unfreeze_for({"name": "finetune_topk", "k": 1, "train_tied_embedding": train_tied}, lm)
    before = {n: p.detach().clone() for n, p in lm.named_parameters()}
    optimizer = torch.optim.SGD([p for p in lm.parameters() if p.requires_grad], lr=1.0)
    ids = torch.randint(3, 100, (2, 8))
    lm(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    changed = {n for n, p in lm.named_parameters() if not torch.equal(p, before[n])}
    assert ("transformer.wte.weight" in changed) is train_tied
    assert any(n.startswith("transformer.h.1.") for n in changed) and "transformer.ln_f.weight" in changed
    assert not any(n.startswith("transformer.h.0.") for n in changed) and "transformer.wpe.weight" not in changed


# ---- Lin et al. (2020) adapters ----------------------------------------------------------------
def _lin_by_hand(adapter, hidden: torch.Tensor) -> torch.Tensor:
    normed = F.layer_norm(hidden, hidden.shape[-1:], adapter.layer_norm.weight, adapter.layer_norm.bias, adapter.layer_norm.eps)
    return hidden + F.linear(torch.relu(F.linear(normed, adapter.down.weight, adapter.down.bias)), adapter.up.weight, adapter.up.bias)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_lin_adapter_is_layernorm_down_relu_up_plus_residual_at_each_block_output(family):
    lm = tiny_models.build_lm(family)
    base = copy.deepcopy(lm)
    adapters = attach_adapters(lm, bottleneck=4, style="lin")
    blocks = list(lm.transformer.h if family == "gpt2" else lm.model.layers)
    assert len(adapters) == len(blocks) and all(getattr(b, CHILD) is a for b, a in zip(blocks, adapters))
    with torch.no_grad():
        for adapter in adapters:  # every tensor away from its identity init, the layer norm's too
            for p in adapter.parameters():
                p.normal_(0, 0.3)

    # the reference: the un-adapted copy, each block's output replaced by the formula written out
    def by_hand(adapter):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            replaced = _lin_by_hand(adapter, hidden)
            return (replaced, *output[1:]) if isinstance(output, tuple) else replaced
        return hook

    for block, adapter in zip(base.transformer.h if family == "gpt2" else base.model.layers, adapters):
        block.register_forward_hook(by_hand(adapter))
    ids = torch.randint(3, 100, (2, 7))
    with torch.no_grad():
        ours = lm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        reference = base(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        plain = copy.deepcopy(base)
        for block in plain.transformer.h if family == "gpt2" else plain.model.layers:
            block._forward_hooks.clear()
        untouched = plain(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert torch.allclose(ours, reference, atol=1e-5)
    assert not torch.allclose(ours, untouched, atol=1e-3)  # the adapters do something


def test_lin_adapters_count_their_layer_norm_save_and_reload(tmp_path):
    lm = tiny_models.build_lm("gpt2")
    base = copy.deepcopy(lm)
    adapters = attach_adapters(lm, bottleneck=4, style="lin")
    dim = lm.config.hidden_size
    assert sum(p.numel() for p in adapters[0].parameters()) == parameters_per_adapter(dim, 4, "lin") == 2 * dim * 4 + 4 + 3 * dim
    with torch.no_grad():
        for p in (p for a in adapters for p in a.parameters()):
            p.normal_(0, 0.3)
    save_adapters(tmp_path / "lin", lm, "ffn")
    load_adapters(tmp_path / "lin", base)
    ids = torch.randint(3, 100, (2, 5))
    with torch.no_grad():
        assert torch.equal(base(input_ids=ids).logits, lm(input_ids=ids).logits)
    # the paper's ADAPTER(3%) / (0.1%) on GPT-2 medium (24 blocks, d 1024), Lin-style: 2dr + r + 3d each
    assert bottleneck_for_percent(3.0, 354_823_168, 1024, 24, "lin") == 215
    assert bottleneck_for_percent(0.1, 354_823_168, 1024, 24, "lin") == 6
    with pytest.raises(AdapterError, match="placement 'houlsby'"):
        attach_adapters(tiny_models.build_lm("gpt2"), bottleneck=4, placement="houlsby", style="lin")


def test_adapter_style_and_topk_options_validate():
    def adapter(**keys):
        return _cfg(AdapterOptions(name="adapter", bottleneck=8, **keys))

    validate(adapter(adapter_style="lin"))
    validate(adapter(adapter_style="houlsby", adapter_placement="houlsby"))
    with pytest.raises(ConfigError, match="method.adapter_style='pfeiffer'"):
        validate(adapter(adapter_style="pfeiffer"))
    with pytest.raises(ConfigError, match="method.adapter_placement='houlsby'"):
        validate(adapter(adapter_style="lin", adapter_placement="houlsby"))
    validate(_cfg(TopLayersOptions(name="finetune_topk", train_tied_embedding=True)))
