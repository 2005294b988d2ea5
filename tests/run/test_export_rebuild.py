"""Exports record how their base model was built, and generate / convert / eval rebuild it.

Regression (issue 18): a tiny-model export (``model=tiny_random``: random weights, config
overrides) named only ``embedded:smollm2-135m-instruct``, so prefixlab-generate, -convert and -eval
loaded the pretrained SmolLM2 and failed (or would have used other weights)."""

import json

import pytest
import torch

from prefixlab.engine.export import PrefixFormatError, load_prefix
from prefixlab.training.lm_module import PrefixTuningModule

from pipeline.helpers import GENERATION, OPTIM, PREFIX_METHOD, TINY_MODEL, load_tiny_lm

SEED = 1234


def _lm_weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny random-init module built after seeding (as a run does), its prefix moved off its
    init, exported into <run>/prefix."""
    torch.manual_seed(SEED)
    module = PrefixTuningModule(model=TINY_MODEL, method=PREFIX_METHOD, optim=OPTIM, generation=GENERATION,
                                task_name="bbc_headline", max_steps=1)
    torch.manual_seed(99)  # later random draws (data order, dropout) must not matter to the rebuild
    with torch.no_grad():
        for p in module.prefixed.prefix_encoder.parameters():
            p.add_(torch.randn_like(p))
    run = tmp_path_factory.mktemp("run")
    module.export(run / "prefix")
    return module, run


def test_random_init_is_drawn_again_from_its_seed():
    torch.manual_seed(SEED)
    first = load_tiny_lm()
    torch.rand(1000)  # the global stream moves on
    torch.manual_seed(SEED)
    again = load_tiny_lm()
    torch.manual_seed(SEED + 1)
    other = load_tiny_lm()
    assert _lm_weights_equal(first, again)
    assert not _lm_weights_equal(first, other)  # the seed matters: recording it is needed


def test_export_records_the_base_model_build(trained):
    _, run = trained
    build = json.loads((run / "prefix" / "prefix_config.json").read_text())["base_model_build"]
    assert build["name_or_path"] == TINY_MODEL["name_or_path"] and build["random_init"] is True
    assert build["config_overrides"] == TINY_MODEL["config_overrides"]
    assert build["seed"] == SEED and len(build["weights_sha256"]) == 64
    assert build["dtype"] == "float32" and build["attn_implementation"] == "sdpa"


def test_generate_rebuilds_the_trained_on_weights(trained, capsys):
    from prefixlab.cli.generate import MixedPrefixGenerator, _choose_base, main

    module, run = trained
    base = _choose_base(None, {"p": run / "prefix"})
    generator = MixedPrefixGenerator(base, {"p": run / "prefix"})
    assert _lm_weights_equal(generator.model.lm, module.prefixed.lm)
    (run / "in.txt").write_text("The weather today\nStocks fell\n")
    main(["--prefix", str(run / "prefix"), "--input", str(run / "in.txt"), "--max-new-tokens", "3"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["prompt"] for line in lines] == ["The weather today", "Stocks fell"]


def test_rebuild_with_other_weights_is_refused_in_one_line(trained, tmp_path, capsys):
    import shutil

    from prefixlab.cli.generate import main

    _, run = trained
    shutil.copytree(run / "prefix", tmp_path / "prefix")
    config_path = tmp_path / "prefix" / "prefix_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_build"]["weights_sha256"] = "0" * 64  # as if this torch drew other weights
    config_path.write_text(json.dumps(config))
    (tmp_path / "in.txt").write_text("hello\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--prefix", str(tmp_path / "prefix"), "--input", str(tmp_path / "in.txt")])
    message = str(exit_info.value.code)
    assert "\n" not in message and "differs from the one the export was trained on" in message


def test_convert_round_trip_keeps_the_build(trained, tmp_path):
    from prefixlab.cli.convert import convert

    _, run = trained
    convert(run / "prefix", "peft", tmp_path / "peft", None)
    assert (tmp_path / "peft" / "prefixlab_base_model.json").is_file()
    convert(tmp_path / "peft", "prefixlab", tmp_path / "back", None)  # no --model: the recorded build
    original, back = load_prefix(run / "prefix"), load_prefix(tmp_path / "back")
    assert back.base_build == original.base_build
    for site, prefix in original.activations.sites.items():
        assert torch.equal(prefix.keys, back.activations.sites[site].keys)
        assert torch.equal(prefix.values, back.activations.sites[site].values)


def test_eval_rebuilds_the_base_model_and_loads_the_prefix(trained):
    from omegaconf import OmegaConf

    from prefixlab.training.evaluation import adopt_recorded_model, build_lm_module, check_model_matches, describe_source

    module, run = trained
    source = describe_source(str(run / "prefix"))
    pretrained = {**TINY_MODEL, "random_init": False, "config_overrides": {}}  # what eval's model= default says
    resolved = {"model": pretrained, "method": PREFIX_METHOD, "optim": OPTIM, "generation": GENERATION}
    settings = OmegaConf.structured({"model": dict(pretrained)})
    assert adopt_recorded_model(source, settings, resolved)
    check_model_matches(source, settings.model.name_or_path)
    evaluated = build_lm_module(source, resolved, "bbc_headline", eval_zero_shot=False)
    assert _lm_weights_equal(evaluated.prefixed.lm, module.prefixed.lm)
    expected = load_prefix(run / "prefix").activations.sites["decoder_self"]
    assert torch.equal(evaluated.prefix().sites["decoder_self"].keys, expected.keys)


def test_damaged_build_record_is_one_line(trained, tmp_path):
    import shutil

    _, run = trained
    shutil.copytree(run / "prefix", tmp_path / "prefix")
    config_path = tmp_path / "prefix" / "prefix_config.json"
    config = json.loads(config_path.read_text())
    del config["base_model_build"]["seed"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(PrefixFormatError, match="records no seed"):
        load_prefix(tmp_path / "prefix")


def test_encoder_export_rebuilds_its_random_encoder(tmp_path):
    """The encoder path records the same build in head_config.json and its prefix_config.json."""
    from prefixlab.data.encoder_data import CLASSIFICATION
    from prefixlab.training.encoder_module import EncoderTaskModule, load_encoder_export
    from prefixlab.training.model_loading import MINILM

    tiny_encoder = {"name_or_path": MINILM, "dtype": "float32", "attn_implementation": "sdpa", "random_init": True,
                    "config_overrides": {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64,
                                         "num_attention_heads": 4}}
    method = {**PREFIX_METHOD, "prefix_length": 3, "mid_dim": 16}
    torch.manual_seed(SEED)
    module = EncoderTaskModule(tiny_encoder, method, OPTIM, "bbc_topic", CLASSIFICATION, labels=["a", "b"], max_steps=1)
    with torch.no_grad():
        for p in module.prefixed.model.classifier.parameters():  # the head as trained: not as drawn
            p.add_(1.0)
    module.export(tmp_path / "prefix")
    torch.manual_seed(0)  # another global state: the rebuild seeds itself
    wrapped, prefix, _, _ = load_encoder_export(tmp_path / "prefix")
    assert _lm_weights_equal(wrapped.model, module.prefixed.model)
    assert load_prefix(tmp_path / "prefix").base_build == module.base_build
    assert prefix is not None
