"""Prefixes on encoder-decoders (BART, T5): three sites as in Li & Liang (2021).

* gradients reach every site's MLP; each site alone changes the output; switching a site off
  is exactly a prefix without it; ``prefix=None`` is exactly the plain model;
* ``generate`` (greedy, with the model's EncoderDecoderCache, cross-attention keys cached once)
  equals a cache-free greedy loop through ``forward``; beam search rows equal rows run alone;
* the encoder prefix reaches the decoder only through the encoder states;
* PEFT's seq2seq prefix tuning (peft 0.21.2) feeds the decoder self-attention only (pinned).

Tiny random models built from configs; nothing downloaded.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import SEQ2SEQ_VOCAB, build_seq2seq, pad_rows, random_rows
from transformers import (
    DynamicCache,
    EncoderDecoderCache,
    GenerationConfig,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.generation.configuration_utils import GenerationMode

from prefixlab.engine.families import adapter_for
from prefixlab.engine.injection import PrefixActivations, SitePrefix
from prefixlab.engine.parameterization import FlatPrefix, MLPPrefix
from prefixlab.engine.prefixed_seq2seq import PrefixedSeq2SeqLM

SITES = ("encoder_self", "decoder_self", "cross")
FAMILIES = ("bart", "t5")
IMPLEMENTATIONS = ("sdpa", "eager")
VOCAB = SEQ2SEQ_VOCAB  # 99
ATOL = 1e-5



# --------------------------------------------------------------------------- models and data


# build_seq2seq (tests/tiny_models.py): a 2+2-layer random BART / T5 in eval mode, weight matrices
# redrawn with std 0.2 (at the default init greedy decoding just repeats the start token), eos
# dropped so every generate call runs to max_new_tokens.


def _batch(lm, seed: int = 1):
    """A right-padded source batch (lengths 7, 4, 6) and labels [3, 5]."""
    ids, mask = pad_rows(random_rows([7, 4, 6], seed, vocab=VOCAB), "right", lm.config.pad_token_id)
    labels = torch.stack(random_rows([5, 5, 5], seed + 100, vocab=VOCAB))
    return ids, mask, labels


def _flat(geometry, prefix_length: int = 3, seed: int = 0, init_std: float = 0.5) -> FlatPrefix:
    torch.manual_seed(seed)
    return FlatPrefix(geometry, prefix_length, init_std=init_std)


def _without(prefix: PrefixActivations, site: str) -> PrefixActivations:
    return PrefixActivations({name: p for name, p in prefix.sites.items() if name != site})


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_finds_three_sites_in_layer_order(family):
    lm = build_seq2seq(family)
    adapter = adapter_for(lm)
    assert adapter.is_encoder_decoder and not adapter.shift_positions
    modules = adapter.attention_modules(lm)
    assert [s.value for s in modules] == list(SITES)
    base = lm.model if family == "bart" else lm
    if family == "bart":
        assert modules["encoder_self"][1] is base.encoder.layers[1].self_attn
        assert modules["decoder_self"][1] is base.decoder.layers[1].self_attn
        assert modules["cross"][1] is base.decoder.layers[1].encoder_attn
    else:
        assert modules["encoder_self"][1] is base.encoder.block[1].layer[0].SelfAttention
        assert modules["decoder_self"][1] is base.decoder.block[1].layer[0].SelfAttention
        assert modules["cross"][1] is base.decoder.block[1].layer[1].EncDecAttention
    geometry = adapter.geometry(lm)
    for site in SITES:
        g = geometry.sites[site]
        assert (g.num_layers, g.num_kv_heads, g.head_dim) == (2, 4, 8)


def test_t5_geometry_reads_d_kv_not_d_model_over_heads():
    """mT5-style configs have d_kv != d_model / num_heads; the geometry must follow the module."""
    config = T5Config(
        vocab_size=VOCAB, d_model=30, d_kv=4, d_ff=16, num_layers=1, num_decoder_layers=1, num_heads=3,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    lm = T5ForConditionalGeneration(config)
    g = adapter_for(lm).geometry(lm).sites["cross"]
    assert (g.num_kv_heads, g.head_dim) == (3, 4)
    model = PrefixedSeq2SeqLM(lm.eval(), _flat(adapter_for(lm).geometry(lm)))
    ids = torch.randint(3, VOCAB, (1, 5))
    with torch.no_grad():
        model(ids, torch.ones_like(ids), labels=ids)  # shapes fit


def test_decoder_only_model_is_refused():
    from .conftest import build_lm

    lm = build_lm("gpt2")
    with pytest.raises(ValueError, match="encoder-decoder"):
        PrefixedSeq2SeqLM(lm)
    assert lm.config._attn_implementation == "sdpa"  # left as it was


# --------------------------------------------------------------------------- (a) gradients


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_site_mlp_gets_gradients(family, attn_implementation):
    lm = build_seq2seq(family, attn_implementation)
    for p in lm.parameters():
        p.requires_grad_(False)
    torch.manual_seed(3)
    encoder = MLPPrefix(adapter_for(lm).geometry(lm), prefix_length=3, embed_dim=8, mid_dim=16, mlp_layers=2)
    model = PrefixedSeq2SeqLM(lm, encoder)
    model.train()
    ids, mask, labels = _batch(lm)
    model(ids, mask, labels=labels).loss.backward()

    for site in SITES:
        named = [(n, p) for n, p in encoder.named_parameters() if f".{site}." in f".{n}"]
        assert len(named) == 1 + 2 * 3, site  # embedding + 3 linear layers (weight, bias)
        for name, p in named:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in lm.parameters())


# --------------------------------------------------------------------------- (b) (c) sites on / off


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_each_site_alone_changes_logits(family, attn_implementation):
    lm = build_seq2seq(family, attn_implementation)
    model = PrefixedSeq2SeqLM(lm)
    ids, mask, labels = _batch(lm)
    with torch.no_grad():
        plain = model(ids, mask, labels=labels, prefix=None).logits
        for site in SITES:
            alone = _flat(model.geometry.restricted_to([site]), seed=4)()
            assert list(alone.sites) == [site]
            logits = model(ids, mask, labels=labels, prefix=alone).logits
            assert not torch.allclose(logits, plain, atol=1e-3), site


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_switching_a_site_off_equals_a_prefix_without_it(family, attn_implementation):
    lm = build_seq2seq(family, attn_implementation)
    ids, mask, labels = _batch(lm)
    with torch.no_grad():
        before_attaching = lm(input_ids=ids, attention_mask=mask, labels=labels).logits
    model = PrefixedSeq2SeqLM(lm)
    full = _flat(model.geometry, seed=5)
    with torch.no_grad():
        assert torch.equal(model(ids, mask, labels=labels, prefix=None).logits, before_attaching)
        all_sites = model(ids, mask, labels=labels, prefix=full()).logits
        for site in SITES:
            others = [s for s in SITES if s != site]
            built_without = _flat(model.geometry.restricted_to(others), seed=99)
            for name in others:
                built_without.rows[name].copy_(full.rows[name])
            switched_off = model(ids, mask, labels=labels, prefix=_without(full(), site)).logits
            assert torch.equal(switched_off, model(ids, mask, labels=labels, prefix=built_without()).logits), site
            assert not torch.allclose(switched_off, all_sites, atol=1e-3), site
        # the prefix encoder's default is used when ``prefix`` is left out
        model.prefix_encoder = full
        assert torch.equal(model(ids, mask, labels=labels).logits, all_sites)
        assert torch.equal(model(ids, mask, labels=labels, prefix=None).logits, before_attaching)


# --------------------------------------------------------------------------- (d) greedy generate


def _manual_greedy(model: PrefixedSeq2SeqLM, ids, mask, prefix, steps: int):
    """Greedy decoding that re-runs the whole decoder every step, no cache at all."""
    start = model.lm.config.decoder_start_token_id
    decoder_ids = torch.full((ids.shape[0], 1), start, dtype=torch.long)
    step_logits = []
    for _ in range(steps):
        out = model(ids, mask, decoder_input_ids=decoder_ids, prefix=prefix, use_cache=False)
        logits = out.logits[:, -1].float()
        step_logits.append(logits)
        decoder_ids = torch.cat([decoder_ids, logits.argmax(-1, keepdim=True)], dim=-1)
    return decoder_ids, torch.stack(step_logits, dim=1)


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generate_equals_cache_free_loop(family, attn_implementation):
    steps = 6
    lm = build_seq2seq(family, attn_implementation)
    model = PrefixedSeq2SeqLM(lm, _flat(adapter_for(lm).geometry(lm), prefix_length=4, seed=6)).eval()
    ids, mask, _ = _batch(lm, seed=7)
    kwargs = dict(do_sample=False, max_new_tokens=steps, min_new_tokens=steps)
    out = model.generate(ids, mask, output_logits=True, return_dict_in_generate=True, **kwargs)
    with torch.no_grad():
        expected_ids, expected_logits = _manual_greedy(model, ids, mask, model.prefix_encoder(), steps)

    got_logits = torch.stack(out.logits, dim=1).float()
    assert torch.allclose(got_logits, expected_logits, atol=1e-4), (got_logits - expected_logits).abs().max()
    assert torch.equal(out.sequences, expected_ids)
    assert not torch.equal(out.sequences, model.generate(ids, mask, prefix=None, **kwargs))


@pytest.mark.parametrize("family", FAMILIES)
def test_cache_holds_no_prefix_and_incremental_decoding_matches(family):
    """With ``use_cache=True`` the self- and cross-attention caches hold only real tokens (the
    cross one is filled once, ``is_updated``); the next step reads it and still sees the prefix."""
    lm = build_seq2seq(family)
    prefix = _flat(adapter_for(lm).geometry(lm), prefix_length=4, seed=8)().detached()
    model = PrefixedSeq2SeqLM(lm)
    ids, mask, labels = _batch(lm, seed=9)
    start = torch.full((ids.shape[0], 1), lm.config.decoder_start_token_id, dtype=torch.long)
    decoder_ids = torch.cat([start, labels[:, :3]], dim=-1)
    with torch.no_grad():
        full = model(ids, mask, decoder_input_ids=decoder_ids, prefix=prefix, use_cache=False).logits
        first = model(ids, mask, decoder_input_ids=decoder_ids[:, :2], prefix=prefix, use_cache=True)
        cache = first.cache
        assert isinstance(cache, EncoderDecoderCache)
        assert cache.self_attention_cache.get_seq_length() == 2
        assert cache.cross_attention_cache.get_seq_length() == ids.shape[1]
        assert all(cache.is_updated.values())
        logits = [first.logits]
        for t in (2, 3):
            step = model(
                None, mask, decoder_input_ids=decoder_ids[:, t : t + 1], prefix=prefix, cache=cache,
                encoder_outputs=(first.encoder_last_hidden_state,), use_cache=True,
            )
            logits.append(step.logits)
        assert cache.cross_attention_cache.get_seq_length() == ids.shape[1]
    incremental = torch.cat(logits, dim=1)
    assert torch.allclose(incremental, full, atol=ATOL), (incremental - full).abs().max()


# --------------------------------------------------------------------------- (e) beam search


def _per_example_prefix(geometry, seeds: list[int]) -> PrefixActivations:
    """One prefix per batch row (batch dim = len(seeds)) over every site."""
    parts = [_flat(geometry, prefix_length=3, seed=s)().detached() for s in seeds]
    return PrefixActivations(
        {
            site: SitePrefix(
                torch.cat([p.sites[site].keys for p in parts], dim=1),
                torch.cat([p.sites[site].values for p in parts], dim=1),
            )
            for site in geometry.sites
        }
    )


def _row(prefix: PrefixActivations, i: int) -> PrefixActivations:
    return PrefixActivations(
        {n: SitePrefix(p.keys[:, i : i + 1], p.values[:, i : i + 1]) for n, p in prefix.sites.items()}
    )


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_rows_equal_rows_alone(family, attn_implementation):
    steps, beams = 5, 3
    lm = build_seq2seq(family, attn_implementation)
    model = PrefixedSeq2SeqLM(lm).eval()
    rows = random_rows([7, 4, 6], seed=10, vocab=VOCAB)
    ids, mask = pad_rows(rows, "right", lm.config.pad_token_id)
    prefix = _per_example_prefix(model.geometry, [11, 12, 13])  # a different prefix per row
    kwargs = dict(do_sample=False, num_beams=beams, max_new_tokens=steps, min_new_tokens=steps)

    batched = model.generate(ids, mask, prefix=prefix, **kwargs)
    all_beams = model.generate(ids, mask, prefix=prefix, num_return_sequences=beams, **kwargs)
    assert not torch.equal(batched, model.generate(ids, mask, prefix=None, **kwargs))
    for i, row in enumerate(rows):
        alone_ids, alone_mask = row[None], torch.ones(1, len(row), dtype=torch.long)
        alone = model.generate(alone_ids, alone_mask, prefix=_row(prefix, i), **kwargs)
        assert torch.equal(batched[i], alone[0]), i
        alone_all = model.generate(alone_ids, alone_mask, prefix=_row(prefix, i), num_return_sequences=beams, **kwargs)
        assert torch.equal(all_beams[i * beams : (i + 1) * beams], alone_all), i


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_path_with_one_beam_equals_greedy(family, monkeypatch):
    """``num_beams=1`` normally dispatches to greedy search; force the beam-search code path
    (cache reordering, beam bookkeeping) and check it decodes the same with a prefix."""
    steps = 6
    lm = build_seq2seq(family)
    model = PrefixedSeq2SeqLM(lm, _flat(adapter_for(lm).geometry(lm), prefix_length=4, seed=14)).eval()
    ids, mask, _ = _batch(lm, seed=15)
    kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=steps, min_new_tokens=steps)
    greedy = model.generate(ids, mask, **kwargs)

    seen = []
    original = GenerationConfig.get_generation_mode

    def force_beam_search(self, assistant_model=None):
        mode = original(self, assistant_model)
        seen.append(mode)
        return GenerationMode.BEAM_SEARCH

    monkeypatch.setattr(GenerationConfig, "get_generation_mode", force_beam_search)
    beam_path = model.generate(ids, mask, **kwargs)
    assert seen == [GenerationMode.GREEDY_SEARCH]
    assert torch.equal(beam_path, greedy)


# --------------------------------------------------------------------------- (f) encoder vs cross


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_prefix_reaches_decoder_only_through_encoder_states(family, attn_implementation):
    lm = build_seq2seq(family, attn_implementation)
    model = PrefixedSeq2SeqLM(lm)
    ids, mask, labels = _batch(lm, seed=16)
    with torch.no_grad():
        plain = model(ids, mask, labels=labels, prefix=None)
        out = {
            site: model(ids, mask, labels=labels, prefix=_flat(model.geometry.restricted_to([site]), seed=17)())
            for site in SITES
        }
        attended = mask.bool()
        encoder_self = out["encoder_self"].encoder_last_hidden_state
        assert not torch.allclose(encoder_self[attended], plain.encoder_last_hidden_state[attended], atol=1e-3)
        for site in ("cross", "decoder_self"):
            assert torch.equal(out[site].encoder_last_hidden_state, plain.encoder_last_hidden_state), site
            assert not torch.allclose(out[site].logits, plain.logits, atol=1e-3), site
        # an encoder-only prefix acts on the decoder exactly as feeding its encoder states does
        via_states = model(
            None, mask, labels=labels, prefix=None, encoder_outputs=(out["encoder_self"].encoder_last_hidden_state,)
        )
        assert torch.equal(via_states.logits, out["encoder_self"].logits)


# --------------------------------------------------------------------------- PEFT's seq2seq prefix tuning


def test_peft_seq2seq_prefix_tuning_leaves_the_encoder_plain():
    """Regression pin for peft 0.21.2 + transformers 5.24 (BART, 2 decoder layers).

    PEFT's ``SEQ_2_SEQ_LM`` prefix tuning passes its prefix as an ``EncoderDecoderCache``: the
    encoder never sees it (its outputs are bit-identical to the plain model's), and PEFT then
    replaces the cross-attention cache with an empty one, so the cross-attention has no prefix
    either. What is left is a decoder self-attention prefix, and its layout is off: PEFT
    duplicates its [layers * 2] key/value stack and splits it in chunks of 4, so decoder layer
    ``i`` reads the rows of table layer ``(2 * i) % layers`` (here both layers read layer 0's rows;
    layer 1's half of the table is unused). Since the prefix sits in the cache, BART's decoder
    positions also start at P. The reference below rebuilds exactly that with a plain model and
    a hand-filled cache. Ours, with an ``encoder_self`` site, changes the encoder states.
    If PEFT changes this, the pin fails: update it then.
    """
    from peft import PrefixTuningConfig, get_peft_model

    prefix_length, layers, heads, head_dim = 4, 2, 4, 8
    lm = build_seq2seq("bart")
    plain = copy.deepcopy(lm)
    pm = get_peft_model(
        copy.deepcopy(lm), PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=prefix_length)
    ).eval()
    table = pm.prompt_encoder["default"].embedding.weight
    assert table.shape == (prefix_length, layers * 2 * heads * head_dim)

    ids, mask, labels = _batch(lm, seed=18)
    with torch.no_grad():
        peft_out = pm(input_ids=ids, attention_mask=mask, labels=labels)
        base = plain(input_ids=ids, attention_mask=mask, labels=labels)
    # the encoder saw no prefix; the decoder did
    assert torch.equal(peft_out.encoder_last_hidden_state, base.encoder_last_hidden_state)
    assert not torch.allclose(peft_out.logits, base.logits, atol=1e-3)

    # exactly a decoder-self-only prefix, layer i <- table layer (2 * i) % layers, in the cache
    kv = table.detach().view(prefix_length, layers, 2, heads, head_dim)
    batch = ids.shape[0]
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    for i in range(layers):
        j = (2 * i) % layers
        keys = kv[:, j, 0].transpose(0, 1)[None].expand(batch, -1, -1, -1).contiguous()
        values = kv[:, j, 1].transpose(0, 1)[None].expand(batch, -1, -1, -1).contiguous()
        cache.self_attention_cache.update(keys, values, i)
    from transformers.models.bart.modeling_bart import shift_tokens_right

    decoder_ids = shift_tokens_right(labels, lm.config.pad_token_id, lm.config.decoder_start_token_id)
    with torch.no_grad():
        reference = plain(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids, cache=cache, use_cache=True)
    assert torch.allclose(reference.logits, peft_out.logits, atol=ATOL), (reference.logits - peft_out.logits).abs().max()

    # ours: an encoder_self prefix changes the encoder states
    ours = PrefixedSeq2SeqLM(lm)
    encoder_prefix = _flat(ours.geometry.restricted_to(["encoder_self"]), prefix_length, seed=19)()
    with torch.no_grad():
        ours_out = ours(ids, mask, labels=labels, prefix=encoder_prefix)
    attended = mask.bool()
    assert not torch.allclose(
        ours_out.encoder_last_hidden_state[attended], base.encoder_last_hidden_state[attended], atol=1e-3
    )


# --------------------------------------------------------------------------- gradient checkpointing


def _site_grads(family: str, use_reentrant: bool | None):
    lm = build_seq2seq(family)
    for p in lm.parameters():
        p.requires_grad_(False)
    torch.manual_seed(20)
    encoder = MLPPrefix(adapter_for(lm).geometry(lm), prefix_length=3, embed_dim=8, mid_dim=16)
    model = PrefixedSeq2SeqLM(lm, encoder)
    if use_reentrant is not None:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model.train()
    for m in lm.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for layer in lm.modules():  # BART's and T5 attention's dropouts are floats, not nn.Dropout
        for name in ("dropout", "activation_dropout"):
            if isinstance(getattr(layer, name, None), float):
                setattr(layer, name, 0.0)
    ids, mask, labels = _batch(lm, seed=21)
    model(ids, mask, labels=labels).loss.backward()
    return {n: p.grad.clone() for n, p in encoder.named_parameters()}


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_gives_the_same_site_gradients(family, use_reentrant):
    plain, checkpointed = _site_grads(family, None), _site_grads(family, use_reentrant)
    for name, grad in plain.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(checkpointed[name], grad, atol=1e-6), (name, (checkpointed[name] - grad).abs().max())


# --------------------------------------------------------------------------- mBART, mT5 (same adapters)


def _tiny_sibling(model_type: str):
    torch.manual_seed(22)
    if model_type == "mbart":
        from transformers import MBartConfig, MBartForConditionalGeneration

        config = MBartConfig(
            vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        )
        lm = MBartForConditionalGeneration(config)
        heads = {"encoder_self": (4, 8), "decoder_self": (2, 16), "cross": (2, 16)}
    else:
        from transformers import MT5Config, MT5ForConditionalGeneration

        config = MT5Config(
            vocab_size=VOCAB, d_model=30, d_kv=4, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=3,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
        lm = MT5ForConditionalGeneration(config)
        heads = {site: (3, 4) for site in SITES}
    with torch.no_grad():
        for p in lm.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    return lm.eval(), heads


@pytest.mark.parametrize("model_type", ["mbart", "mt5"])
def test_mbart_and_mt5_take_a_prefix_at_every_site(model_type):
    """mBART with different encoder/decoder head counts, mT5 with d_kv != d_model / heads: the
    geometry follows each site's modules, and every site's prefix fits and acts."""
    lm, heads = _tiny_sibling(model_type)
    ids, mask, labels = _batch(lm, seed=23)
    with torch.no_grad():
        before = lm(input_ids=ids, attention_mask=mask, labels=labels).logits
    model = PrefixedSeq2SeqLM(lm)
    for site in SITES:
        g = model.geometry.sites[site]
        assert (g.num_layers, g.num_kv_heads, g.head_dim) == (2, *heads[site]), site
    with torch.no_grad():
        assert torch.equal(model(ids, mask, labels=labels, prefix=None).logits, before)
        for site in SITES:
            prefix = _flat(model.geometry.restricted_to([site]), seed=24)()
            assert not torch.allclose(model(ids, mask, labels=labels, prefix=prefix).logits, before, atol=1e-3), site
