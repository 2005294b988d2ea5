"""A model folder with custom code (config.json ``auto_map``) never runs that code unless the
training config opts in with ``model.trust_remote_code=true``: not when stdin answers "y" to
transformers' prompt, and never because a prefix / export folder asks for it."""

import json
import os
import subprocess
import sys

import pytest

from prefixlab.config import ModelConfig
from prefixlab.engine.export import ExportedPrefix, load_prefix, save_prefix
from prefixlab.engine.parameterization import FlatPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM
from prefixlab.errors import USER_ERRORS
from prefixlab.training.model_loading import RemoteCodeError

from .conftest import cli_env, one_error_line

OPT_IN = "model.trust_remote_code=true"
_CODE = """import pathlib
pathlib.Path({marker!r}).write_text("custom code ran")
from transformers import PretrainedConfig, PreTrainedModel


class CustomConfig(PretrainedConfig):
    model_type = "custom_lm"


class CustomModel(PreTrainedModel):
    config_class = CustomConfig
"""


@pytest.fixture
def custom_code_model(tmp_path):
    """(model folder whose config points at its own Python files, the file that code would create)."""
    folder, marker = tmp_path / "custom_model", tmp_path / "custom_code_ran"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "custom_lm",
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                     "AutoModelForCausalLM": "modeling_custom.CustomModel",
                     "AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]},
    }))
    for name in ("configuration_custom.py", "modeling_custom.py", "tokenization_custom.py"):
        (folder / name).write_text(_CODE.format(marker=str(marker)))
    return folder, marker


def _python(code: str, tmp_path, *args, stdin="y\ny\ny\n"):
    """Run ``code`` in a fresh interpreter whose stdin answers "y" to any "run the custom code?" prompt."""
    env = {**cli_env(), "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    return subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)


_LOADERS = """import sys
from prefixlab.training import model_loading
try:
    getattr(model_loading, sys.argv[1])(sys.argv[2])
except model_loading.RemoteCodeError as error:
    print(f"RemoteCodeError: {error}")
"""


@pytest.mark.cli  # a fresh interpreter in a subprocess
@pytest.mark.parametrize("loader", ["load_config", "load_lm"])
def test_custom_code_does_not_run_even_when_stdin_says_yes(tmp_path, custom_code_model, loader):
    folder, marker = custom_code_model
    result = _python(_LOADERS, tmp_path, loader, str(folder))
    assert not marker.exists(), "the model folder's code ran"
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr  # no prompt at all
    lines = [line for line in result.stdout.splitlines() if line.startswith("RemoteCodeError: ")]
    assert len(lines) == 1, result.stdout + result.stderr[-3000:]
    assert str(folder) in lines[0] and OPT_IN in lines[0]


@pytest.mark.cli  # a fresh interpreter in a subprocess
def test_the_opt_in_key_is_what_lets_it_run(tmp_path, custom_code_model):
    folder, marker = custom_code_model
    assert ModelConfig().trust_remote_code is False  # the default
    code = "import sys\nfrom prefixlab.training.model_loading import load_config\nload_config(sys.argv[1], trust_remote_code=True)"
    result = _python(code, tmp_path, str(folder), stdin="")
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker.exists()


@pytest.mark.cli
def test_training_names_the_folder_and_the_key_in_one_line(tmp_path, custom_code_model):
    from pipeline.helpers import TINY_CLI

    folder, marker = custom_code_model
    args = [a for a in TINY_CLI if not a.startswith("model=")]
    result = subprocess.run(
        [sys.executable, "-m", "prefixlab.cli.train", *args, f"model.name_or_path={folder}", f"hydra.run.dir={tmp_path / 'run'}"],
        input="y\n", capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**cli_env(), "HF_MODULES_CACHE": str(tmp_path / "hf_modules")},
    )
    assert result.returncode != 0 and not marker.exists()
    line = one_error_line(result.stderr)
    assert str(folder) in line and OPT_IN in line


def _prefix_folder(tmp_path, base_model: str):
    """A real exported prefix (tiny Llama geometry) whose config and metadata ask for remote code."""
    from tiny_models import build_lm

    lm = build_lm("llama", seed=None, run_to_max_new_tokens=False, max_position_embeddings=64, pad_token_id=None)
    geometry = PrefixedCausalLM(lm).geometry
    activations = FlatPrefix(geometry, 3, init_std=0.1)().detached()
    path = save_prefix(tmp_path / "prefix", ExportedPrefix(activations, geometry, base_model, 3, "prefix",
                                                            {"task": "t", "trust_remote_code": True}))
    config_file = path / "prefix_config.json"
    config = json.loads(config_file.read_text())
    config["trust_remote_code"] = True
    config_file.write_text(json.dumps(config))
    return path


@pytest.mark.cli
def test_a_prefix_folder_cannot_opt_in(tmp_path, custom_code_model, capsys):
    folder, marker = custom_code_model
    path = _prefix_folder(tmp_path, str(folder))
    loaded = load_prefix(path)
    assert "trust_remote_code" not in loaded.metadata and loaded.metadata["task"] == "t"
    assert "ignoring trust_remote_code, metadata.trust_remote_code" in capsys.readouterr().err

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n")
    env = {**cli_env(), "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    result = subprocess.run([sys.executable, "-m", "prefixlab.cli.generate", "--prefix", str(path), "--input", str(prompts)],
                            input="y\n", capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode != 0 and not marker.exists()
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("prefixlab-generate: error:")]
    assert len(errors) == 1 and str(folder) in errors[0] and OPT_IN in errors[0], result.stderr[-3000:]


@pytest.mark.cli
def test_prefixlab_convert_never_runs_the_model_code(tmp_path, custom_code_model):
    folder, marker = custom_code_model
    peft = tmp_path / "peft"
    peft.mkdir()
    (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING", "trust_remote_code": True,
                                                          "base_model_name_or_path": str(folder)}))
    env = {**cli_env(), "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    result = subprocess.run([sys.executable, "-m", "prefixlab.cli.convert", str(peft), "--to", "prefixlab",
                             "--out", str(tmp_path / "out"), "--model", str(folder)],
                            input="y\n", capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode != 0 and not marker.exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("prefixlab-convert: error:")]
    assert len(errors) == 1 and str(folder) in errors[0] and OPT_IN in errors[0], result.stderr[-3000:]


def test_the_refusal_is_a_user_error():
    assert issubclass(RemoteCodeError, USER_ERRORS)
