"""A single run validates its exported weights once: where ``fit`` validated at its last step, the
final validation metrics are that validation's, equal to what a second ``trainer.validate`` gives
(the reference: the same run with the reuse turned off); elsewhere it still validates after fit.
In-process runs of the tiny model."""

import json

import pytest
import pytorch_lightning as pl

from prefixlab.cli.train import train
from prefixlab.training.final_validation import LastFitValidation

from pipeline.helpers import TINY_CLI
from training.test_early_stopping import compose_train

VALIDATES_AT_THE_END = [*TINY_CLI, "trainer.max_steps=3", "trainer.val_check_interval=3", "eval_zero_shot=false"]


@pytest.fixture
def validate_calls(monkeypatch):
    """How many times ``trainer.validate`` ran (the real one runs)."""
    calls = []
    real = pl.Trainer.validate

    def counting(self, *args, **kwargs):
        calls.append(self.global_step)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "validate", counting)
    return calls


def val_metrics(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key.startswith("val/")}


def test_the_last_validation_of_fit_is_reused_and_equals_a_second_validation(tmp_path, monkeypatch, validate_calls):
    reused = train(compose_train(VALIDATES_AT_THE_END), tmp_path / "reused")
    assert validate_calls == [], "fit validated at step 3, the exported step: no second validation"
    assert reused["steps"] == 3 and {"val/loss", "val/rouge1", "val/rougeL"} <= set(reused)
    assert val_metrics(json.loads((tmp_path / "reused" / "metrics.json").read_text())) == val_metrics(reused)

    # the reference: the same run (same seed), validating again after fit as before
    monkeypatch.setattr(LastFitValidation, "metrics_at", lambda self, step: None)
    validated = train(compose_train(VALIDATES_AT_THE_END), tmp_path / "validated")
    assert validate_calls == [3]
    assert val_metrics(reused) == val_metrics(validated)  # every val/* key, exactly
    assert {k: v for k, v in reused.items() if k.startswith("test/")} == {k: v for k, v in validated.items() if k.startswith("test/")}


def test_a_run_whose_fit_did_not_validate_at_its_last_step_validates_after_it(tmp_path, validate_calls):
    # validation every 2 steps of 3: fit's last validation is at step 2, the exported weights are step 3's
    metrics = train(compose_train([*TINY_CLI, "trainer.max_steps=3", "trainer.val_check_interval=2", "eval_zero_shot=false"]),
                    tmp_path / "run")
    assert validate_calls == [3] and "val/rougeL" in metrics


def test_the_callback_keeps_only_a_validation_at_the_asked_step():
    callback = LastFitValidation()
    assert callback.metrics_at(0) is None  # no validation yet
    callback.step, callback.metrics = 5, {"val/loss": 1.0}
    assert callback.metrics_at(5) == {"val/loss": 1.0} and callback.metrics_at(6) is None
