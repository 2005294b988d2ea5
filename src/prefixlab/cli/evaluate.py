"""prefixlab-eval: score a checkpoint, an exported prefix or the bare model on a task split, without training.

    prefixlab-eval eval.source=outputs/<run>/checkpoints/last.ckpt            # the run's task, test split
    prefixlab-eval eval.source=outputs/<run>/prefix task=e2e eval.split=validation
    prefixlab-eval eval.source=path/to/peft_adapter model.name_or_path=gpt2
    prefixlab-eval task=e2e                                                    # the bare model (zero-shot)
    prefixlab-eval -m eval.source=runs/a/prefix,runs/b/prefix generation.num_beams=1,5   # a sweep

A Hydra app composed like ``prefixlab-train`` (model, task, generation, trainer, logger, scale,
experiment), plus ``eval.source`` and ``eval.split``. It writes ``metrics.json`` (the split's
metrics, what was evaluated and, for a checkpoint, its step) and ``predictions.jsonl`` into its
own run folder (``outputs/eval/...``; a sweep: ``multirun/eval/...``), so ``prefixlab-report``
reads an evaluation sweep as it reads a training sweep.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from prefixlab.config import EvalConfig, register_configs, validate

register_configs()
OmegaConf.register_new_resolver("pid", lambda: __import__("os").getpid(), replace=True, use_cache=True)


def evaluate(cfg: DictConfig, run_dir: Path) -> dict:
    settings: EvalConfig = OmegaConf.to_object(cfg)
    validate(settings)
    from prefixlab.run.loggers import check_loggers

    check_loggers(settings.logger)  # W&B online without credentials, a logger not installed
    from prefixlab.training.evaluation import SPLITS, EvaluationSourceError, describe_source

    if settings.eval.split not in SPLITS:
        raise EvaluationSourceError(f"eval.split={settings.eval.split!r}: one of {', '.join(SPLITS)}")
    source = describe_source(settings.eval.source)  # small files only: a bad source fails before any weights load
    import pytorch_lightning as pl

    from prefixlab.run.runs import build_logger, build_trainer, check_writable, finish_logger, logger_callbacks, write_results
    from prefixlab.training.encoder_module import is_encoder_model
    from prefixlab.training.evaluation import (adopt_recorded_model, build_encoder_module, build_lm_module,
                                               check_model_matches, evaluated_record, metrics_record)
    from prefixlab.training.model_loading import load_config
    from prefixlab.training.reliability import EvaluationInterrupted, StopOnSignal, record_failure
    from prefixlab.training.resume import ResumableDataModule

    check_writable(run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if source.kind == "checkpoint":  # the model the checkpoint was trained on, whatever model= says
        resolved["model"] = {**resolved["model"], **source.hyper_parameters["model"]}
        settings.model.name_or_path = resolved["model"]["name_or_path"]
    adopt_recorded_model(source, settings, resolved)  # an export's recorded base model (random init: its seed)
    check_model_matches(source, settings.model.name_or_path)
    model_config = load_config(settings.model.name_or_path, trust_remote_code=settings.model.trust_remote_code)
    started = time.time()
    pl.seed_everything(settings.seed, workers=True)
    if is_encoder_model(model_config):
        datamodule, module = build_encoder_module(source, settings, resolved)
    else:
        datamodule = ResumableDataModule.for_run(settings, bool(model_config.is_encoder_decoder))
        datamodule.setup("fit")  # data errors before the LM loads
        module = build_lm_module(source, resolved, settings.task.name, settings.eval_zero_shot)
    counts = module.parameter_counts()
    logger = build_logger(settings.logger, run_dir, f"eval-{settings.task.name}-{source.kind}", resolved)
    summary = {"evaluated": evaluated_record(source, settings.eval.split), **counts}

    def record(error: BaseException) -> BaseException:
        return record_failure(error, run_dir, module, trainer, None, summary, started, evaluation_only=True)

    # SIGINT / SIGTERM end generate() at the next decoding step and the run after that batch, as in
    # training's evaluation; a second signal stops at once. No checkpoint: the command is run again.
    stop = StopOnSignal(run_dir / "checkpoints" / "last.ckpt", on_forced_stop=record, interrupted=EvaluationInterrupted)
    trainer = None
    stop.listen()
    try:
        # the loggers' samples table of the split, as a training run logs it (logger.samples_rows)
        trainer = build_trainer(settings.trainer, logger, run_dir, callbacks=[stop, *logger_callbacks(settings.logger)])
        split, stage = settings.eval.split, None
        if split == "validation":
            stage_metrics, stage = trainer.validate(module, datamodule=datamodule)[0], "val"
        else:
            stage_metrics, stage = trainer.test(module, datamodule=datamodule)[0], "test"
        metrics = metrics_record(source, split, stage_metrics, counts, started)
        write_results(run_dir, metrics, module.last_predictions.get(stage))
    except BaseException as error:
        raise record(error)
    finally:
        stop.stop_listening()
        finish_logger(logger, run_dir / "metrics.json")
    print(f"results: {run_dir} (metrics.json, predictions.jsonl)")
    return metrics


CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def hydra_main(cfg: DictConfig) -> float:
    from prefixlab.cli.errors import run_job

    def score(run_dir: Path) -> float:
        metrics = evaluate(cfg, run_dir)
        stage = "val" if cfg.eval.split == "validation" else "test"
        return metrics.get(f"{stage}/{cfg.task.primary_metric}", float("nan"))

    def source_errors() -> tuple[type, ...]:
        from prefixlab.training.evaluation import EvaluationSourceError

        return (EvaluationSourceError,)

    return run_job("prefixlab-eval", cfg, score, input_errors=source_errors)


def main() -> None:
    from prefixlab.cli.errors import run_hydra

    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        from prefixlab.cli.help import print_help

        print_help("prefixlab-eval", __doc__ or "", EvalConfig, Path(CONFIG_DIR), "eval")
        return
    run_hydra("prefixlab-eval", hydra_main)


if __name__ == "__main__":
    main()
