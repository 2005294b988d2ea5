"""Early stopping and the best checkpoint (issue 18): training stops when optimized_metric stops
improving and metrics.json says at which step; export.checkpoint=best exports (and scores) exactly
the weights of checkpoints/best.ckpt; a resume restores the early-stopping state; a setting that
cannot work is one config error before any model loads. In-process runs of the tiny model."""

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from prefixlab.cli.train import CONFIG_DIR, train
from prefixlab.config import ConfigError, register_configs
from prefixlab.engine.export import load_prefix
from prefixlab.training.best_checkpoint import BestCheckpoint, EarlyStoppingAtStep
from prefixlab.training.resume_settings import result_settings

from pipeline.helpers import TINY_CLI

# validation after every optimizer step (16 examples in batches of 4: epochs of 4 steps)
WATCHED = [*TINY_CLI, "trainer.val_check_interval=1", "trainer.log_every_n_steps=1", "eval_zero_shot=false"]
# A flat metric by construction: no change, however large, counts as an improvement after the first validation.
NEVER_IMPROVES = ["trainer.early_stopping.enabled=true", "trainer.early_stopping.min_delta=1e9", "optimized_metric=val/loss"]


def compose_train(overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def callback_state(checkpoint_path, kind: str) -> dict:
    """The state a callback class (by name) saved in a training checkpoint."""
    states = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["callbacks"]
    (state,) = [value for key, value in states.items() if key.startswith(kind)]
    return state


def test_early_stopping_stops_before_max_steps_and_metrics_json_says_at_which_step(tmp_path):
    run = tmp_path / "run"
    metrics = train(compose_train([*WATCHED, *NEVER_IMPROVES, "trainer.early_stopping.patience=2", "trainer.max_steps=8"]), run)
    # validation 1 sets the best, 2 and 3 do not improve: patience 2 is used up at step 3, of 8
    assert metrics["status"] == "completed" and metrics["steps"] == 3
    assert metrics["stopped_early_at_step"] == 3 and metrics["early_stopping_reason"] == "patience_exhausted"
    assert metrics_of(run)["stopped_early_at_step"] == 3
    assert metrics["exported_checkpoint"] == "last" and metrics["exported_step"] == 3
    assert (run / "checkpoints" / "best.ckpt").is_file() and metrics["monitored_metric"] == "val/loss"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def _prefix_of_checkpoint(cfg, checkpoint_path):
    """The prefix (activations per site) that the trainable state saved in ``checkpoint_path`` gives."""
    from prefixlab.training.lm_module import PrefixTuningModule

    resolved = OmegaConf.to_container(cfg, resolve=True)
    module = PrefixTuningModule(model=resolved["model"], method=resolved["method"], optim=resolved["optim"],
                                generation=resolved["generation"], task_name=resolved["task"]["name"],
                                eval_zero_shot=False, max_steps=resolved["trainer"]["max_steps"])
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    assert set(state) == set(module.state_dict())  # the trainable state only, and all of it
    module.load_state_dict(state, strict=False)
    return module.exported_prefix().activations.sites


@pytest.fixture(scope="module")
def best_exported(tmp_path_factory):
    """export.checkpoint=best on a metric that stays flat: a small lr moves the prefix (so every step's
    weights differ) but not the tiny LM's greedy outputs, so ROUGE never strictly improves after the
    first validation and the best is step 1 of 4."""
    run = tmp_path_factory.mktemp("best") / "run"
    cfg = compose_train([*WATCHED, "export.checkpoint=best", "optimized_metric=val/rougeL", "optim.lr=1e-4",
                         "trainer.max_steps=4"])
    return cfg, run, train(cfg, run)


def test_best_export_is_the_best_checkpoints_prefix_and_differs_from_the_last(best_exported):
    cfg, run, metrics = best_exported
    best_path, last_path = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    best_step = torch.load(best_path, weights_only=True)["global_step"]
    assert metrics["steps"] == 4 and "stopped_early_at_step" not in metrics  # export=best alone does not stop
    assert metrics["exported_checkpoint"] == "best" and metrics["exported_step"] == metrics["best_step"] == best_step
    assert best_step < metrics["steps"], "the premise: a flat metric keeps its first validation as the best"
    exported = load_prefix(run / "prefix").activations.sites
    from_best, from_last = _prefix_of_checkpoint(cfg, best_path), _prefix_of_checkpoint(cfg, last_path)
    assert set(exported) == set(from_best)
    for site in exported:
        assert torch.equal(exported[site].keys, from_best[site].keys) and torch.equal(exported[site].values, from_best[site].values)
    assert any(not torch.equal(exported[site].keys, from_last[site].keys) for site in exported)  # the last step's differs


def test_best_exports_final_metrics_are_those_of_the_best_weights(best_exported):
    _, run, metrics = best_exported
    # trainer.validate after fit ran on the loaded best weights: it reproduces the best validation's score
    assert metrics["val/rougeL"] == pytest.approx(metrics["best_val_metric"], abs=1e-6)
    assert metrics_of(run)["exported_step"] == metrics["best_step"]
    predictions = (run / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 4  # test ran (on the same weights as the export)


def test_resume_restores_the_early_stopping_state(tmp_path):
    """Regression: last.ckpt is written at the end of a step's training batch, before that step's
    validation, and Lightning skips that validation on resume, so the early-stopping count (and the
    best score) of the checkpoint's own step were lost. last.ckpt is now written again after it."""
    run = tmp_path / "run"
    first = train(compose_train([*WATCHED, *NEVER_IMPROVES, "trainer.early_stopping.patience=3", "trainer.max_steps=3"]), run)
    assert first["steps"] == 3 and "stopped_early_at_step" not in first
    state = callback_state(run / "checkpoints" / "last.ckpt", "EarlyStoppingAtStep")
    assert state["wait_count"] == 2 and state["stopped_step"] is None  # validations 2 and 3 did not improve

    # Continued to 8 steps: one more validation without improvement uses up patience 3 at step 4. An
    # early-stopping state starting afresh would take step 4 as its best and stop at step 7.
    resumed = train(compose_train([*WATCHED, *NEVER_IMPROVES, "trainer.early_stopping.patience=3", "trainer.max_steps=8",
                                   "resume=auto", "resume_allow_changes=[trainer.max_steps]"]), run)
    assert resumed["resumed_at_step"] == 3 and resumed["steps"] == 4 and resumed["stopped_early_at_step"] == 4

    # a run that stopped early stays stopped when resumed again (its checkpoint holds the stop)
    again = train(compose_train([*WATCHED, *NEVER_IMPROVES, "trainer.early_stopping.patience=3", "trainer.max_steps=10",
                                 "resume=auto", "resume_allow_changes=[trainer.max_steps]"]), run)
    assert again["resumed_at_step"] == 4 and again["steps"] == 4 and again["stopped_early_at_step"] == 4


def test_changed_early_stopping_settings_are_refused_on_resume():
    plain = result_settings(OmegaConf.to_container(compose_train(WATCHED), resolve=True))
    watched = result_settings(OmegaConf.to_container(compose_train([*WATCHED, *NEVER_IMPROVES]), resolve=True))
    assert plain["trainer.early_stopping.enabled"] is False and "trainer.early_stopping.patience" not in plain
    assert watched["trainer.early_stopping.patience"] == 3 and watched["optimized_metric"] == "val/loss"
    assert watched["trainer.val_check_interval"] == 1 and watched["trainer.early_stopping.min_delta"] == 1e9


@pytest.mark.parametrize("overrides, expected", [
    (["trainer.early_stopping.enabled=true", "trainer.val_check_interval=null"],
     "trainer.early_stopping.enabled=true needs validation during training, and trainer.val_check_interval=null"),
    (["export.checkpoint=best", "trainer.val_check_interval=null"],
     "export.checkpoint=best needs validation during training"),
    (["export.checkpoint=best", "trainer.val_check_interval=9"], "trainer.val_check_interval=9 is beyond the run's 3 training batches"),
    (["trainer.early_stopping.enabled=true", "optimized_metric=test/rougeL"], "must watch a validation metric, e.g. optimized_metric=val/rougeL"),
    (["export.checkpoint=best", "optimized_metric=val/bleu"], "optimized_metric=val/bleu is not a metric task=bbc_headline logs"),
    (["export.checkpoint=newest"], "export.checkpoint='newest' is out of range: last (the final step) | best"),
    (["trainer.early_stopping.patience=0"], "trainer.early_stopping.patience=0 is out of range"),
    (["trainer.early_stopping.min_delta=-0.1"], "trainer.early_stopping.min_delta=-0.1 is out of range"),
])
def test_a_bad_combination_is_one_config_error_before_any_model_loads(tmp_path, monkeypatch, overrides, expected):
    import prefixlab.training.model_loading as model_loading

    monkeypatch.setattr(model_loading, "load_config", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError) as info:
        train(compose_train([*WATCHED, *overrides]), tmp_path / "run")
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_packed_sweep_refuses_early_stopping_in_one_line():
    from prefixlab.sweeps.packed import packing_problem

    settings = OmegaConf.to_object(compose_train([*WATCHED, *NEVER_IMPROVES]))
    assert packing_problem(settings).startswith("trainer.early_stopping.enabled=true is not supported by launcher=packed")
    settings = OmegaConf.to_object(compose_train([*WATCHED, "export.checkpoint=best"]))
    assert packing_problem(settings).startswith("export.checkpoint=best is not supported by launcher=packed")


def test_a_non_finite_metric_is_never_the_best():
    best = BestCheckpoint(dirpath="unused", monitor="val/loss", mode="min")
    assert not best.check_monitor_top_k(None, torch.tensor(math.nan))
    assert not best.check_monitor_top_k(None, torch.tensor(-math.inf))  # an "infinitely good" loss is no better
    assert best.check_monitor_top_k(None, torch.tensor(0.5))  # nothing saved yet: a finite value is the best so far


def test_early_stopping_state_keeps_its_stop_step():
    stopping = EarlyStoppingAtStep("val/loss", "min", patience=2, min_delta=0.0)
    stopping.stopped_step = 7
    restored = EarlyStoppingAtStep("val/loss", "min", patience=2, min_delta=0.0)
    restored.load_state_dict(stopping.state_dict())
    assert restored.stopped_step == 7
    legacy = {k: v for k, v in stopping.state_dict().items() if k != "stopped_step"}  # a plain EarlyStopping's state
    restored.load_state_dict(legacy)
    assert restored.stopped_step is None
