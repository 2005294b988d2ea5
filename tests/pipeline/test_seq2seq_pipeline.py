"""Encoder-decoder models on the same pipeline: prefixes at every site, switchable per site."""

import json
import os
import subprocess
import sys

import pytest
import torch
from tiny_models import build_seq2seq

from prefixlab.training.model_loading import load_tokenizer

from .helpers import TINY_CLI

pytestmark = pytest.mark.cli  # the real CLI in subprocesses: `make test-fast` skips these


def _tiny_seq2seq(kind, vocab, pad, eos):
    """The shared tiny BART / T5 at its config's own init, with the tokenizer's vocabulary and tokens."""
    common = dict(redraw_std=None, run_to_max_new_tokens=False, vocab_size=vocab, pad_token_id=pad, eos_token_id=eos,
                  tie_word_embeddings=True)
    if kind == "bart":
        return build_seq2seq("bart", **common, max_position_embeddings=256, bos_token_id=1, decoder_start_token_id=eos,
                             forced_eos_token_id=None)
    return build_seq2seq("t5", **common, decoder_start_token_id=pad)


@pytest.fixture(scope="module", params=["bart", "t5"])
def seq2seq_folder(request, tmp_path_factory):
    """A tiny random BART / T5 with the embedded tokenizer, saved as an ordinary local model folder."""
    tokenizer = load_tokenizer("embedded:smollm2-135m-instruct")
    folder = tmp_path_factory.mktemp(request.param)
    _tiny_seq2seq(request.param, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _run(args, cwd):
    return subprocess.run([sys.executable, "-m", "prefixlab.cli.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _seq2seq_cli(folder):
    return [a for a in TINY_CLI if not a.startswith("model=")] + [f"model.name_or_path={folder}", "trainer.max_steps=2"]


@pytest.mark.parametrize("sites", ["null", "[encoder_self]", "[decoder_self,cross]"])
def test_seq2seq_prefix_trains_and_exports_the_chosen_sites(tmp_path, seq2seq_folder, sites):
    result = _run(_seq2seq_cli(seq2seq_folder) + [f"method.prefix_sites={sites}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "outputs").glob("*/*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and "test/rougeL" in metrics
    exported = json.loads((run_dir / "prefix" / "prefix_config.json").read_text())
    expected = ["cross", "decoder_self", "encoder_self"] if sites == "null" else sorted(sites.strip("[]").split(","))
    assert sorted(exported["geometry"]["sites"]) == expected


def test_decoder_only_methods_on_an_encoder_decoder_fail_before_loading(tmp_path, seq2seq_folder):
    args = [a for a in _seq2seq_cli(seq2seq_folder) if not a.startswith("method.mid_dim")]
    result = _run(args + ["method=embedding"], tmp_path)
    assert result.returncode != 0
    assert "method=embedding is implemented for decoder-only models" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_site_that_the_model_lacks_is_rejected(tmp_path):
    result = _run(TINY_CLI + ["method.prefix_sites=[cross]"], tmp_path)
    assert result.returncode != 0
    assert "do not exist in a 'llama' model" in result.stderr
