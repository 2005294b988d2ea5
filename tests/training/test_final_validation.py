"""A single run validates its exported weights once: where ``fit`` validated the exported step (the
last one, or the best one with ``export.checkpoint=best``), the final validation metrics are that
validation's, equal to what a second ``trainer.validate`` gives (the reference: the same run with
the reuse turned off), and nothing is logged a second time; elsewhere it still validates after fit.
In-process runs of the tiny model."""

import csv
import json

import pytest
import pytorch_lightning as pl

from prefixlab.cli.train import train
from prefixlab.training.final_validation import FitValidations

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
    monkeypatch.setattr(FitValidations, "metrics_at", lambda self, step: None)
    validated = train(compose_train(VALIDATES_AT_THE_END), tmp_path / "validated")
    assert validate_calls == [3]
    assert val_metrics(reused) == val_metrics(validated)  # every val/* key, exactly
    assert {k: v for k, v in reused.items() if k.startswith("test/")} == {k: v for k, v in validated.items() if k.startswith("test/")}


def test_a_run_whose_fit_did_not_validate_at_its_last_step_validates_after_it(tmp_path, validate_calls):
    # validation every 2 steps of 3: fit's last validation is at step 2, the exported weights are step 3's
    metrics = train(compose_train([*TINY_CLI, "trainer.max_steps=3", "trainer.val_check_interval=2", "eval_zero_shot=false"]),
                    tmp_path / "run")
    assert validate_calls == [3] and "val/rougeL" in metrics


def val_rows_by_step(run_dir) -> list[int]:
    """The step of each row of the run's CSV log that holds a validation metric."""
    with open(run_dir / "csv" / "metrics.csv") as log:
        return [int(row["step"]) for row in csv.DictReader(log) if row.get("val/rougeL")]


def test_best_export_reuses_the_best_steps_validation_and_logs_nothing_at_the_last_step(tmp_path, monkeypatch, validate_calls):
    # a flat metric keeps its first validation as the best (training/test_early_stopping.py's premise)
    best = [*TINY_CLI, "trainer.val_check_interval=1", "trainer.max_steps=4", "eval_zero_shot=false", "logger=csv",
            "export.checkpoint=best", "optimized_metric=val/rougeL", "optim.lr=1e-4"]
    reused = train(compose_train(best), tmp_path / "reused")
    assert reused["exported_checkpoint"] == "best" and reused["exported_step"] < reused["steps"] == 4  # the premise
    assert validate_calls == [], "fit validated the best step: no validation after it"
    # one row per validation of fit, at four distinct steps (Lightning logs fit's validations at the
    # count of batches stepped before them)
    assert len(val_rows_by_step(tmp_path / "reused")) == len(set(val_rows_by_step(tmp_path / "reused"))) == 4

    # the reference: the best weights loaded and validated again after fit, as before
    monkeypatch.setattr(FitValidations, "metrics_at", lambda self, step: None)
    validated = train(compose_train(best), tmp_path / "validated")
    assert validate_calls == [4] and validated["exported_step"] == reused["exported_step"]
    assert val_metrics(reused) == val_metrics(validated)  # the best weights score what their validation in fit did
    assert {k: v for k, v in reused.items() if k.startswith("test/")} == {k: v for k, v in validated.items() if k.startswith("test/")}
    # what the reuse avoids: a fifth validation row, the best step's numbers logged after the last step's
    assert len(val_rows_by_step(tmp_path / "validated")) == 5


def test_the_callback_keeps_each_validation_by_step():
    callback = FitValidations()
    assert callback.metrics_at(0) is None  # no validation yet
    callback.by_step = {2: {"val/loss": 2.0}, 5: {"val/loss": 1.0}}
    assert callback.metrics_at(5) == {"val/loss": 1.0} and callback.metrics_at(2) == {"val/loss": 2.0}
    assert callback.metrics_at(6) is None


def test_a_resumed_run_reuses_a_best_validation_made_before_the_resume(tmp_path, validate_calls):
    # the best step (1: a flat metric) was validated by the first process; its val/* travel in last.ckpt
    best = [*TINY_CLI, "trainer.val_check_interval=1", "eval_zero_shot=false", "export.checkpoint=best",
            "optimized_metric=val/rougeL", "optim.lr=1e-4"]
    first = train(compose_train([*best, "trainer.max_steps=3"]), tmp_path / "run")
    resumed = train(compose_train([*best, "trainer.max_steps=4", "resume=auto", "resume_allow_changes=[trainer.max_steps]"]),
                    tmp_path / "run")
    assert resumed["resumed_at_step"] == 3 and resumed["exported_step"] == first["exported_step"] < 3  # the premise
    assert validate_calls == [], "the best step's validation came with the checkpoint: no validation after fit"
    assert val_metrics(resumed) == val_metrics(first)
