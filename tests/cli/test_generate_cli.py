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
from prefixlab.training.model_loading import load_lm, load_tokenizer

from pipeline.helpers import TINY_MODEL, load_tiny_lm


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The tiny random model as an ordinary local model folder."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    load_tiny_lm().save_pretrained(folder)
    load_tokenizer(TINY_MODEL["name_or_path"]).save_pretrained(folder)
    return folder


def _cli(args, stdin=""):
    return subprocess.run([sys.executable, "-m", "prefixlab.cli.generate", *args], input=stdin, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.cli
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


@pytest.mark.cli
def test_prefix_for_another_model_is_one_clear_error(tmp_path, saved_model):
    model = PrefixedCausalLM(load_lm(str(saved_model)))
    save_prefix(tmp_path / "p", ExportedPrefix(FlatPrefix(model.geometry, 2)().detached(), model.geometry, "some/other-model", 2, "prefix_flat"))
    result = _cli(["--model", str(saved_model), "--prefix", str(tmp_path / "p")], "hello")
    assert result.returncode != 0
    assert "'some/other-model'" in result.stderr and str(saved_model) in result.stderr
    assert "Traceback" not in result.stderr


def test_convert_round_trip_through_peft_keeps_the_outputs(tmp_path, saved_model):
    from prefixlab.cli.convert import convert
    from prefixlab.engine.export import load_prefix

    model = PrefixedCausalLM(load_lm(str(saved_model)))
    activations = FlatPrefix(model.geometry, 3, init_std=1.0)().detached()
    save_prefix(tmp_path / "ours", ExportedPrefix(activations, model.geometry, str(saved_model), 3, "prefix_flat"))
    convert(tmp_path / "ours", "peft", tmp_path / "peft", None)
    convert(tmp_path / "peft", "prefixlab", tmp_path / "back", str(saved_model))
    back = load_prefix(tmp_path / "back", model.geometry, expected_model=str(saved_model))
    ids = torch.randint(5, 1000, (1, 6))
    with torch.no_grad():
        assert torch.allclose(model(ids, torch.ones_like(ids), prefix=activations).logits,
                              model(ids, torch.ones_like(ids), prefix=back.activations).logits, atol=1e-6)


@pytest.mark.cli
def test_infix_export_is_used_as_an_infix(tmp_path, saved_model):
    import dataclasses

    from prefixlab.engine.injection import PrefixActivations

    model = PrefixedCausalLM(load_lm(str(saved_model)))
    activations = FlatPrefix(model.geometry, 3, init_std=2.0)().detached()
    save_prefix(tmp_path / "infix", ExportedPrefix(activations, model.geometry, str(saved_model), 3, "infix", {"placement": "infix"}))
    result = _cli(["--model", str(saved_model), "--prefix", f"i={tmp_path / 'infix'}", "--max-new-tokens", "4"], "The match ended")
    assert result.returncode == 0, result.stderr[-2000:]
    tokenizer = load_tokenizer(str(saved_model))
    ids = torch.tensor([tokenizer("The match ended", add_special_tokens=False)["input_ids"]])
    visible = torch.tensor([ids.shape[1] - 1])
    infix = PrefixActivations({n: dataclasses.replace(p, visible_from=visible) for n, p in activations.sites.items()})
    alone = model.generate(ids, torch.ones_like(ids), prefix=infix, max_new_tokens=4, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    assert json.loads(result.stdout)["output"] == tokenizer.decode(alone[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_python_api_mixes_prefixes_for_an_encoder_decoder(tmp_path):
    """One batch on a tiny BART, each prompt with its own three-site prefix (or none), beam search."""
    from tiny_models import build_seq2seq

    from prefixlab.engine.prefixed_seq2seq import PrefixedSeq2SeqLM
    from prefixlab.cli.generate import MixedPrefixGenerator

    tokenizer = load_tokenizer(TINY_MODEL["name_or_path"])
    bart = build_seq2seq("bart", redraw_std=None, run_to_max_new_tokens=False, vocab_size=len(tokenizer),
                         max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id, bos_token_id=1,
                         eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id, init_std=0.2,
                         tie_word_embeddings=True)  # init_std: BartConfig's own initializer std
    bart.save_pretrained(tmp_path / "bart")
    tokenizer.save_pretrained(tmp_path / "bart")
    model_dir = str(tmp_path / "bart")
    model = PrefixedSeq2SeqLM(load_lm(model_dir).eval())
    for name, length in (("a", 2), ("b", 5)):
        torch.manual_seed(length)
        activations = FlatPrefix(model.geometry, length, init_std=2.0)().detached()
        save_prefix(tmp_path / name, ExportedPrefix(activations, model.geometry, model_dir, length, "prefix_flat"))
    generator = MixedPrefixGenerator(model_dir, {"a": tmp_path / "a", "b": tmp_path / "b"})
    prompts = [{"prompt": "the cat sat on the mat", "prefix": "a"}, {"prompt": "stocks fell", "prefix": "b"},
               {"prompt": "rain again today in town", "prefix": None}]
    together = list(generator.generate(prompts, max_new_tokens=5, num_beams=2, batch_size=3))
    for prompt in prompts:
        alone = list(generator.generate([prompt], max_new_tokens=5, num_beams=2, batch_size=1))[0]
        assert alone["output"] == together[prompts.index(prompt)]["output"]
    # and the prefixes matter: the same prompts without them generate something else
    plain = list(generator.generate([{**p, "prefix": None} for p in prompts[:2]], max_new_tokens=5, num_beams=2, batch_size=2))
    assert [r["output"] for r in plain] != [r["output"] for r in together[:2]]


def test_prompt_files_end_lines_at_newline_only_and_accept_a_byte_order_mark(tmp_path):
    # regression: str.splitlines() cut a prompt holding U+2028 or U+0085 in two
    from prefixlab.cli.generate import _read_prompts

    path = tmp_path / "prompts.txt"
    path.write_text('first\u2028still first\r\n{"prompt": "json\\u0085prompt"}\nnext\x85line\n', encoding="utf-8-sig")
    rows = _read_prompts(str(path), default_prefix=None)
    assert [r["prompt"] for r in rows] == ["first\u2028still first", "json\x85prompt", "next\x85line"]


def test_bad_inputs_are_one_line_before_any_model_loads(tmp_path, saved_model, capsys):
    """Regression (adversarial review): these gave tracebacks. Each is refused by prefixlab-generate's
    main() in one line, before a model loads."""
    from prefixlab.cli.generate import main

    model = PrefixedCausalLM(load_lm(str(saved_model)))
    run_dir = tmp_path / "run"
    save_prefix(run_dir / "prefix", ExportedPrefix(FlatPrefix(model.geometry, 2)().detached(), model.geometry,
                                                   str(saved_model), 2, "prefix_flat"))
    (tmp_path / "empty").mkdir()
    listed = tmp_path / "listed"
    save_prefix(listed, ExportedPrefix(FlatPrefix(model.geometry, 2)().detached(), model.geometry, str(saved_model), 2, "prefix_flat"))
    config = json.loads((listed / "prefix_config.json").read_text())
    (listed / "prefix_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "base_model"}))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n")
    cases = [
        (["--prefix", str(run_dir / "prefix"), "--input", str(tmp_path / "missing.txt")], "missing.txt: cannot read the prompts"),
        (["--model", str(saved_model), "--prefix", f"a={run_dir}", "--input", str(prompts)], "is a run folder; give its export"),
        (["--prefix", str(tmp_path / "empty"), "--input", str(prompts)], "is not an exported prefix: expected prefix_config.json"),
        (["--prefix", str(listed), "--input", str(prompts)], "base_model is 'missing'; expected a non-empty string"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as stop:
            main(args)
        line = str(stop.value.code)
        assert line.startswith("prefixlab-generate: error: ") and message in line and "\n" not in line, line
