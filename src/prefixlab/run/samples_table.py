"""The generated-samples table of each validation and test, in each logger's own form: a W&B
table, a TensorBoard text (Markdown) table, an MLflow table artifact. CSV has none:
``predictions.jsonl`` holds the rows."""

from __future__ import annotations

import pytorch_lightning as pl

from prefixlab.config import LoggerConfig


def _markdown_table(columns: list[str], data: list[list[str]]) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join([*lines, *("| " + " | ".join(cell(v) for v in row) + " |" for row in data)])


def log_samples(logger, key: str, columns: list[str], data: list[list[str]], step: int) -> None:
    """One samples table in the logger's own form; CSV has none (predictions.jsonl holds them)."""
    kind = type(logger).__name__
    if hasattr(logger, "log_table") and "Wandb" in kind:
        logger.log_table(key=key, columns=columns, data=data, step=step)
    elif "TensorBoard" in kind and hasattr(logger.experiment, "add_text"):
        logger.experiment.add_text(key, _markdown_table(columns, data), global_step=step)
    elif "MLFlow" in kind and logger.run_id is not None:
        logger.experiment.log_table(logger.run_id, {c: [row[i] for row in data] for i, c in enumerate(columns)},
                                    artifact_file=f"{key}-step{step}.json")


class SamplesTable(pl.Callback):
    """A table of generated samples (input, prediction, references, zero-shot prediction where
    there is one) after each validation and after test, at most ``rows`` rows, to every logger
    that has a form for it.

    Runs in ``on_*_end``, after the module's ``on_*_epoch_end`` has scored the rows and kept them
    in ``last_predictions`` (callbacks' epoch-end hooks run before the module's).

    ``step``: the step the tables belong to when the Trainer that evaluates is not the one that
    trained (a packed job is evaluated by a Trainer of its own, whose global_step is 0, after the
    pack trained it for ``step`` steps); None: the Trainer's global_step."""

    def __init__(self, rows: int, step: int | None = None) -> None:
        self.rows = rows
        self.step = step
        self._logged: dict[str, int] = {}
        self._steps: set[tuple[str, int]] = set()

    def _log(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        samples = getattr(pl_module, "last_predictions", {}).get(stage)
        if not samples or self._logged.get(stage) == id(samples):  # nothing new since the last table
            return
        self._logged[stage] = id(samples)
        # a validation again at the same step (trainer.validate after a fit that validated last)
        # scores the same prefix: the same table
        step = trainer.global_step if self.step is None else self.step
        if (stage, step) in self._steps:
            return
        self._steps.add((stage, step))
        zero_shot = samples[0].get("zero_shot_prediction") is not None
        columns = ["id", "input", "prediction", *(["zero_shot_prediction"] if zero_shot else []), "references"]
        data = [
            [str(r["id"]), r["input"], r["prediction"], *([r["zero_shot_prediction"]] if zero_shot else []),
             "\n".join(r["references"])]
            for r in samples[: self.rows]
        ]
        for logger in trainer.loggers:
            log_samples(logger, f"{stage}/samples", columns, data, step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._log(trainer, pl_module, "test")


def logger_callbacks(config: LoggerConfig, step: int | None = None) -> list[pl.Callback]:
    """Callbacks the loggers need: the samples table, for the loggers that have one (``step``:
    ``SamplesTable``'s, for an evaluation Trainer that did not train)."""
    has_table = config.wandb or config.tensorboard or config.mlflow
    return [SamplesTable(config.samples_rows, step)] if has_table and config.samples_rows > 0 else []
