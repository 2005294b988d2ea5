"""Exported prefixes: round trip, and one clear error for every kind of bad file."""

import json

import pytest
import torch
from tiny_models import build_lm

from prefixlab.engine.export import ExportedPrefix, PrefixFormatError, load_prefix, save_prefix
from prefixlab.engine.parameterization import MLPPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM


def _tiny_llama(layers=2):
    return build_lm("llama", seed=None, run_to_max_new_tokens=False, num_hidden_layers=layers)


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


# ---- hostile prefix folders (adversarial review): each bad field is one PrefixFormatError line ----

def _edit_config(path, change):
    config = json.loads((path / "prefix_config.json").read_text())
    change(config)
    (path / "prefix_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(metadata=["a", "list"]), r"metadata is \['a', 'list'\]; expected a JSON object"),
    (lambda c: c.pop("base_model"), r"base_model is 'missing'; expected a non-empty string"),
    (lambda c: c.update(base_model=7), r"base_model is 7; expected a non-empty string"),
    (lambda c: c.update(prefix_length="3"), r"prefix_length is '3'; expected a positive integer"),
    (lambda c: c.update(prefix_length=True), r"prefix_length is True; expected a positive integer"),
    (lambda c: c.update(method=None), r"method is None; expected a non-empty string"),
    (lambda c: c["geometry"]["sites"]["decoder_self"].update(rope_theta=10000), r"geometry.sites.decoder_self is .*rope_theta.*; expected an object of positive integers"),
    (lambda c: c["geometry"]["sites"]["decoder_self"].update(head_dim=-8), r"geometry.sites.decoder_self is .*-8.*; expected"),
    (lambda c: c.update(geometry=["not", "an", "object"]), r"geometry is \['not', 'an', 'object'\]; expected"),
])
def test_every_bad_config_field_is_one_line_naming_it(exported, change, message):
    _, path = exported
    _edit_config(path, change)
    with pytest.raises(PrefixFormatError, match=message) as error:
        load_prefix(path)
    assert "\n" not in str(error.value) and "prefix_config.json" in str(error.value)


def test_a_config_that_is_a_list_is_refused(exported):
    _, path = exported
    (path / "prefix_config.json").write_text("[1, 2]")
    with pytest.raises(PrefixFormatError, match="not a JSON object"):
        load_prefix(path)


@pytest.mark.parametrize("bad, message", [
    (lambda t: t.to(torch.int64), "has dtype torch.int64; a prefix holds floating-point activations"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), "holds NaN or infinite values"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("inf")), "holds NaN or infinite values"),
])
def test_integer_or_non_finite_tensors_are_refused(exported, bad, message):
    from safetensors.torch import load_file, save_file

    _, path = exported
    tensors = load_file(str(path / "prefix.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = bad(tensors[name]).contiguous()
    save_file(tensors, str(path / "prefix.safetensors"))
    with pytest.raises(PrefixFormatError, match=f"tensor {name} {message}" if "dtype" in message else message):
        load_prefix(path)
