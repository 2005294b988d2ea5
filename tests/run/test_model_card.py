"""The export's model card (README.md): what it is, its metrics, how to load it (issue 18).
The card's own command lines are run in-process on the tiny export: a card that documents a
command that does not work fails here."""

import json
import shlex

import pytest
import torch
from omegaconf import OmegaConf

from prefixlab.run.model_card import render_model_card, write_model_card
from prefixlab.training.lm_module import PrefixTuningModule

from pipeline.helpers import GENERATION, OPTIM, PREFIX_METHOD, TINY_CLI, TINY_MODEL

# the tiny run's overrides as typed (the progress bar switch is added where the run starts: not part of the card)
RUN_OVERRIDES = [o for o in TINY_CLI if not o.startswith(("trainer.enable_progress_bar", "trainer.max_steps"))] + ["trainer.max_steps=2"]


def _card_line(card: str, program: str) -> list[str]:
    lines = [line for line in card.splitlines() if line.startswith(program + " ")]
    assert len(lines) == 1, f"expected one {program} line in the card:\n{card}"
    return shlex.split(lines[0])[1:]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real 2-step run of the tiny model, in-process, its job overrides recorded as Hydra records them."""
    from hydra import compose, initialize_config_dir

    from prefixlab.cli.train import CONFIG_DIR, train

    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(RUN_OVERRIDES), run_dir / ".hydra" / "overrides.yaml")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=RUN_OVERRIDES + ["trainer.enable_progress_bar=false"])
    train(cfg, run_dir)
    return run_dir


def test_card_names_the_runs_metrics_base_model_and_command(tiny_run):
    card = (tiny_run / "prefix" / "README.md").read_text()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    scores = {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))}
    assert "test/loss" in scores and "val/rougeL" in scores
    for key, value in scores.items():
        assert f"| {key} | {value:.4g} |" in card
    assert "**random weights**" in card and "seed 42" in card and "`num_hidden_layers=2`" in card
    assert f"| trainable_params | {metrics['trainable_params']:,} |" in card
    assert _card_line(card, "prefixlab-train") == RUN_OVERRIDES


def test_cards_eval_command_scores_the_export_as_the_run_did(tiny_run, tmp_path):
    """Regression (issue 18): prefixlab-eval on a tiny export loaded the pretrained SmolLM2."""
    from hydra import compose, initialize_config_dir

    from prefixlab.cli.evaluate import CONFIG_DIR, evaluate

    card = (tiny_run / "prefix" / "README.md").read_text()
    arguments = _card_line(card, "prefixlab-eval")
    assert arguments[0] == f"eval.source={tiny_run / 'prefix'}"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="eval", overrides=arguments + ["trainer.enable_progress_bar=false"])
    evaluated = evaluate(cfg, tmp_path)
    trained = json.loads((tiny_run / "metrics.json").read_text())
    # the same prefix on the same (rebuilt) weights, the same test split and decoding
    assert evaluated["test/loss"] == pytest.approx(trained["test/loss"], rel=1e-5)
    assert evaluated["test/rougeL"] == pytest.approx(trained["test/rougeL"])


def test_cards_generate_command_runs(tiny_run, tmp_path, capsys):
    from prefixlab.cli.generate import main

    card = (tiny_run / "prefix" / "README.md").read_text()
    arguments = _card_line(card, "prefixlab-generate")
    (tmp_path / "prompts.txt").write_text("Shares rose sharply on Monday after the bank said profits doubled.\n")
    arguments[arguments.index("prompts.txt")] = str(tmp_path / "prompts.txt")
    main(arguments + ["--max-new-tokens", "3"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


def test_card_of_a_prefix_shows_the_peft_route(tmp_path):
    torch.manual_seed(0)
    module = PrefixTuningModule(model=TINY_MODEL, method=PREFIX_METHOD, optim=OPTIM, generation=GENERATION,
                                task_name="bbc_headline", max_steps=1)
    module.export(tmp_path / "prefix")
    resolved = {"model": TINY_MODEL, "method": PREFIX_METHOD, "task": {"name": "bbc_headline"}, "run_name": "tiny"}
    path = write_model_card(tmp_path, module, resolved, {"status": "completed", "steps": 1, "test/rougeL": 0.25},
                            command=None)
    card = path.read_text()
    assert path == tmp_path / "prefix" / "README.md"
    assert "# the command was not recorded" in card
    assert _card_line(card, "prefixlab-convert") == [str(tmp_path / "prefix"), "--to", "peft", "--out", str(tmp_path / "prefix-peft")]
    assert "PeftModel.from_pretrained(base," in card and "load_base_lm(read_base_build(" in card  # random base: prefixlab builds it


def test_card_of_a_peft_adapter_loads_it_directly():
    from prefixlab.engine.export import BaseModelBuild

    card = render_model_card(export="/runs/a/trained", run_name="a", task="e2e", method={"name": "lora", "lora_r": 8},
                             method_summary="trains LoRA adapters", export_format="peft", target_only=False,
                             base_build=BaseModelBuild("gpt2"), metrics={}, command=["method=lora"],
                             decoder_only=True, encoder=False)
    assert "This folder is a PEFT adapter" in card and "PeftModel.from_pretrained(base, '/runs/a/trained')" in card
    assert "AutoModelForCausalLM.from_pretrained('gpt2')" in card
    assert "prefixlab-generate" not in card  # it takes prefixes only
    assert "eval.source=/runs/a/checkpoints/last.ckpt" in card


def test_packed_jobs_write_their_own_cards_with_a_rebuildable_base(tmp_path, monkeypatch):
    """A packed sweep's jobs (one shared random-init LM) each get a card and a build record that rebuilds."""
    # glibc's malloc tuning finds libc through `ldconfig -p` (a process): irrelevant to what is tested here
    monkeypatch.setattr("prefixlab.training.cpu_memory.keep_freed_memory", lambda: False)
    from hydra import compose, initialize_config_dir

    from prefixlab.cli.train import CONFIG_DIR
    from prefixlab.sweeps.packed import PackedJob, train_packed
    from prefixlab.training.base_model import load_base_lm, read_base_build

    jobs = []
    for name, length in (("a", 2), ("b", 3)):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*RUN_OVERRIDES, f"method.prefix_length={length}",
                                                          "trainer.max_steps=1", "eval_zero_shot=false"])
        jobs.append(PackedJob(settings=OmegaConf.to_object(cfg), resolved=OmegaConf.to_container(cfg, resolve=True),
                              run_dir=tmp_path / name))
    train_packed(jobs)
    for job in jobs:
        card = (job.run_dir / "prefix" / "README.md").read_text()
        metrics = json.loads((job.run_dir / "metrics.json").read_text())
        assert f"| test/loss | {metrics['test/loss']:.4g} |" in card and "seed 42" in card
        load_base_lm(read_base_build(job.run_dir / "prefix"))  # the fingerprint check passes: the shared LM is the seed's
