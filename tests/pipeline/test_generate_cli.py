"""prefixlab-generate: several prefixes, one mixed batch, each prompt with its own prefix."""

import json
import os
import subprocess
import sys

import pytest
import torch

from prefixlab.engine.export import ExportedPrefix, save_prefix
from prefixlab.engine.parameterization import FlatPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM
from prefixlab.model_loading import load_lm, load_tokenizer

from .helpers import TINY_MODEL, load_tiny_lm


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The tiny random model as an ordinary local model folder."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    load_tiny_lm().save_pretrained(folder)
    load_tokenizer(TINY_MODEL["name_or_path"]).save_pretrained(folder)
    return folder


def _cli(args, stdin=""):
    return subprocess.run([sys.executable, "-m", "prefixlab.generate", *args], input=stdin, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_mixed_prefixes_in_one_batch_equal_each_prompt_alone(tmp_path, saved_model):
    lm = load_lm(str(saved_model))
    model = PrefixedCausalLM(lm.eval())
    prefixes = {}
    for name, length in (("short", 2), ("long", 6)):
        torch.manual_seed(length)
        activations = FlatPrefix(model.geometry, length, init_std=2.0)().detached()
        save_prefix(tmp_path / name, ExportedPrefix(activations, model.geometry, str(saved_model), length, "prefix_flat"))
        prefixes[name] = activations
    lines = [{"prompt": "The weather today", "prefix": "short"}, {"prompt": "Stocks fell sharply as", "prefix": "long"},
             {"prompt": "A new phone", "prefix": "none"}, {"prompt": "The match ended", "prefix": "long"}]
    result = _cli(["--model", str(saved_model), "--prefix", f"short={tmp_path / 'short'}", "--prefix", f"long={tmp_path / 'long'}",
                   "--max-new-tokens", "5", "--batch-size", "4"], "\n".join(json.dumps(line) for line in lines))
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["prefix"] for o in outputs] == [line["prefix"] for line in lines]
    tokenizer = load_tokenizer(str(saved_model))
    for line, output in zip(lines, outputs):
        ids = torch.tensor([tokenizer(line["prompt"], add_special_tokens=False)["input_ids"]])
        alone = model.generate(ids, torch.ones_like(ids), prefix=prefixes.get(line["prefix"]), max_new_tokens=5,
                               do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        assert output["output"] == tokenizer.decode(alone[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_prefix_for_another_model_is_one_clear_error(tmp_path, saved_model):
    model = PrefixedCausalLM(load_lm(str(saved_model)))
    save_prefix(tmp_path / "p", ExportedPrefix(FlatPrefix(model.geometry, 2)().detached(), model.geometry, "some/other-model", 2, "prefix_flat"))
    result = _cli(["--model", str(saved_model), "--prefix", str(tmp_path / "p")], "hello")
    assert result.returncode != 0
    assert "'some/other-model'" in result.stderr and str(saved_model) in result.stderr
    assert "Traceback" not in result.stderr
