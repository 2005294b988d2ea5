"""Exported prefixes: round trip, and one clear error for every kind of bad file."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prefixlab.engine.export import ExportedPrefix, PrefixFormatError, load_prefix, save_prefix
from prefixlab.engine.parameterization import MLPPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM


def _tiny_llama(layers=2):
    config = LlamaConfig(
        vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def exported(tmp_path):
    model = PrefixedCausalLM(_tiny_llama())
    encoder = MLPPrefix(model.geometry, prefix_length=3, embed_dim=32, mid_dim=16)
    model.prefix_encoder = encoder
    path = save_prefix(
        tmp_path / "prefix",
        ExportedPrefix(encoder().detached(), model.geometry, "tiny-llama", 3, "prefix", {"task": "t"}),
    )
    return model, path


def test_round_trip_reproduces_the_logits_of_the_mlp_prefix(exported):
    model, path = exported
    loaded = load_prefix(path, expected_geometry=model.geometry, expected_model="tiny-llama")
    ids = torch.randint(1, 101, (2, 6))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.allclose(model(ids, mask).logits, model(ids, mask, prefix=loaded.activations).logits, atol=1e-6)
    # the MLP is not exported: only the computed activations
    names = json.loads((path / "prefix_config.json").read_text())
    assert names["method"] == "prefix" and names["prefix_length"] == 3


def test_truncated_weights_file_is_reported_as_corrupted(exported):
    _, path = exported
    weights = path / "prefix.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(PrefixFormatError, match="truncated or corrupted"):
        load_prefix(path)


def test_corrupted_config_is_reported(exported):
    _, path = exported
    (path / "prefix_config.json").write_text("{not json")
    with pytest.raises(PrefixFormatError, match="not valid JSON"):
        load_prefix(path)


def test_wrong_format_version_is_reported(exported):
    _, path = exported
    config = json.loads((path / "prefix_config.json").read_text())
    config["format_version"] = 99
    (path / "prefix_config.json").write_text(json.dumps(config))
    with pytest.raises(PrefixFormatError, match="version 99"):
        load_prefix(path)


def test_prefix_for_another_model_or_geometry_is_reported(exported):
    _, path = exported
    with pytest.raises(PrefixFormatError, match="'tiny-llama', not 'other-model'"):
        load_prefix(path, expected_model="other-model")
    other = PrefixedCausalLM(_tiny_llama(layers=3))
    with pytest.raises(PrefixFormatError, match="geometry"):
        load_prefix(path, expected_geometry=other.geometry)


def test_missing_directory_is_reported(tmp_path):
    with pytest.raises(PrefixFormatError, match="not an exported prefix"):
        load_prefix(tmp_path / "nothing")


def test_export_replaces_atomically_and_keeps_the_old_one_on_failure(exported, monkeypatch):
    model, path = exported
    before = (path / "prefix.safetensors").read_bytes()
    import prefixlab.engine.export as export_module

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", failing_save)
    with pytest.raises(OSError):
        save_prefix(path, ExportedPrefix(model.prefix_encoder().detached(), model.geometry, "tiny-llama", 3, "prefix"))
    assert (path / "prefix.safetensors").read_bytes() == before
    assert load_prefix(path).prefix_length == 3
    assert export_module  # module imported for monkeypatch target
