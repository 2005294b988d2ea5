"""prefixlab-generate's input errors are one line naming the thing at fault and its fix (issue 18),
each before any model weights load."""

import pytest
import torch

from prefixlab.cli.generate import main
from prefixlab.engine.export import ExportedPrefix, save_prefix
from prefixlab.engine.geometry import PrefixGeometry, SiteGeometry
from prefixlab.engine.injection import PrefixActivations, SitePrefix


def _error_line(argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("prefixlab-generate: error: ") and "\n" not in message, message
    return message


def _fake_prefix(directory, base_model: str, layers: int = 2, kv_heads: int = 2, head_dim: int = 16, length: int = 3):
    geometry = PrefixGeometry("llama", {"decoder_self": SiteGeometry(layers, kv_heads, head_dim)})
    shape = (layers, 1, kv_heads, length, head_dim)
    activations = PrefixActivations({"decoder_self": SitePrefix(keys=torch.randn(shape), values=torch.randn(shape))})
    return save_prefix(directory, ExportedPrefix(activations, geometry, base_model, length, "prefix_flat"))


def test_missing_input_file_is_one_line(tmp_path):
    prefix = _fake_prefix(tmp_path / "prefix", "embedded:smollm2-135m-instruct")
    message = _error_line(["--prefix", str(prefix), "--input", str(tmp_path / "missing.txt")])
    assert f"--input {tmp_path / 'missing.txt'}: cannot read the prompts (No such file or directory)" in message


def test_run_folder_given_for_its_prefix_names_the_right_path(tmp_path):
    _fake_prefix(tmp_path / "run" / "prefix", "embedded:smollm2-135m-instruct")
    message = _error_line(["--prefix", str(tmp_path / "run"), "--input", "-"])
    assert "is a run folder; give its export" in message and str(tmp_path / "run" / "prefix") in message


def test_run_folder_of_a_method_without_prefix_says_so(tmp_path):
    (tmp_path / "run" / "trained").mkdir(parents=True)
    message = _error_line(["--prefix", str(tmp_path / "run")])
    assert "method without a prefix" in message and str(tmp_path / "run" / "trained") in message


def test_folder_without_prefix_config_is_one_line(tmp_path):
    (tmp_path / "notes").mkdir()
    message = _error_line(["--prefix", str(tmp_path / "notes")])
    assert "is not an exported prefix: expected prefix_config.json" in message and "adapter_config.json" in message


def test_missing_prefix_folder_is_one_line(tmp_path):
    message = _error_line(["--prefix", f"news={tmp_path / 'nowhere'}"])
    assert f"--prefix news={tmp_path / 'nowhere'}: no such folder" in message


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory):
    """The tiny random model (2 layers, 2 kv heads of 16) as an ordinary local model folder."""
    from prefixlab.training.model_loading import load_tokenizer

    from pipeline.helpers import TINY_MODEL, load_tiny_lm

    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    load_tiny_lm().save_pretrained(folder)
    load_tokenizer(TINY_MODEL["name_or_path"]).save_pretrained(folder)
    return folder


def test_prefix_that_does_not_fit_the_model_names_the_difference(tmp_path, tiny_model_folder):
    prefix = _fake_prefix(tmp_path / "prefix", str(tiny_model_folder), layers=3)
    (tmp_path / "in.txt").write_text("hello\n")
    message = _error_line(["--prefix", f"p={prefix}", "--input", str(tmp_path / "in.txt")])
    assert f"prefix p={prefix}" in message
    assert "at decoder_self the prefix has 3 layers x 2 kv heads x head dim 16, the model 2 x 2 x 16" in message


def test_prefix_that_fits_the_model_generates(tmp_path, tiny_model_folder, capsys):
    prefix = _fake_prefix(tmp_path / "prefix", str(tiny_model_folder))  # the control: same folder, right geometry
    (tmp_path / "in.txt").write_text("hello\n")
    main(["--prefix", f"p={prefix}", "--input", str(tmp_path / "in.txt"), "--max-new-tokens", "2"])
    assert '"prefix": "p"' in capsys.readouterr().out
