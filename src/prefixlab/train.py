"""prefixlab-train: compose the config, build data, model and trainer, fit, test, export.

    prefixlab-train                                  # the embedded default (BBC headlines, SmolLM2)
    prefixlab-train method.prefix_length=20 optim.lr=1e-4
    prefixlab-train -m method.prefix_length=1,5,10   # a Hydra sweep into multirun/
    prefixlab-train --cfg job                        # print the composed config
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import TrainConfig, register_configs, validate

register_configs()
# Run directories carry milliseconds and the process id, so jobs started together never share one.
OmegaConf.register_new_resolver("pid", lambda: os.getpid(), replace=True)


def train(cfg: DictConfig, run_dir: Path) -> dict:
    settings: TrainConfig = OmegaConf.to_object(cfg)
    validate(settings)  # cheap checks first: nothing below runs on a bad config
    import pytorch_lightning as pl

    from .methods import check_method_fits_model
    from .tasks import task_options
    from .model_loading import load_config
    from .module import PrefixTuningModule
    from .reliability import LastGoodState, StopOnSignal, record_failure
    from .resume import LAST_CHECKPOINT, ResumableDataModule, check_trainable_state, find_checkpoint, read_checkpoint
    from .runs import (build_logger, build_trainer, check_free_space, check_writable, finish_logger, run_summary,
                       storage_needed, write_results)

    check_writable(run_dir)
    model_config = load_config(settings.model.name_or_path)  # a wrong model name fails here, before any weights load
    resolved = OmegaConf.to_container(cfg, resolve=True)
    check_method_fits_model(resolved["method"], model_config)
    task = settings.task
    resume_from = find_checkpoint(settings.resume, run_dir)  # and check it before loading any model
    saved = read_checkpoint(resume_from, resolved["model"], resolved["method"], task.name) if resume_from else None
    started = time.time()
    pl.seed_everything(settings.seed, workers=True)

    datamodule = ResumableDataModule(
        task.name, settings.model.name_or_path, task.prompt_style, task.max_source_tokens, task.max_target_tokens,
        task.train_size, task.val_size, task.test_size, task.subset_seed, task.batch_size, task.eval_batch_size,
        seed=settings.seed, is_encoder_decoder=bool(model_config.is_encoder_decoder), task_options=task_options(task),
    )
    module = PrefixTuningModule(
        model=resolved["model"], method=resolved["method"], optim=resolved["optim"],
        generation=resolved["generation"], task_name=task.name,
        eval_zero_shot=settings.eval_zero_shot, max_steps=settings.trainer.max_steps,
    )
    if saved:
        check_trainable_state(resume_from, saved["shapes"], module)
        print(f"resuming from {resume_from} (step {saved['global_step']})")
    datamodule.setup("fit")
    train_lengths = [len(e.prompt_ids) + len(e.target_ids) for e in datamodule.splits["train"]]
    counts = module.parameter_counts()
    print(run_summary(counts, task.batch_size, settings.trainer.accumulate_grad_batches, 1, sum(train_lengths) / len(train_lengths)))
    check_free_space(run_dir, storage_needed(counts))

    logger = build_logger(settings.logger, run_dir, settings.run_name, resolved)
    stop, last_good, trainer = StopOnSignal(run_dir / LAST_CHECKPOINT), LastGoodState(), None
    try:
        trainer = build_trainer(settings.trainer, logger, run_dir, callbacks=[stop, last_good])
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)  # checked above
        stop.stop_if_received(trainer)
        val_metrics = trainer.validate(module, datamodule=datamodule)[0]
        test_metrics = trainer.test(module, datamodule=datamodule)[0]
        module.export(run_dir / ("prefix" if module.is_prefix_method else "trained"))
        metrics = {
            "status": "completed",
            "run_name": settings.run_name,
            "steps": trainer.global_step,
            **({"resumed_from": str(resume_from), "resumed_at_step": saved["global_step"]} if saved else {}),
            **counts,
            **{k: float(v) for k, v in {**val_metrics, **test_metrics}.items()},
            "runtime_s": round(time.time() - started, 1),
        }
        write_results(run_dir, metrics, module.last_predictions.get("test"))
    except BaseException as error:  # metrics.json says what happened: interrupted or failed, at which step
        raise record_failure(error, run_dir, module, trainer, last_good, {"run_name": settings.run_name, **counts}, started)
    finally:
        finish_logger(logger)
    print(f"results: {run_dir} (metrics.json, predictions.jsonl, prefix/)")
    return metrics


# conf/ sits at the repository root; src/prefixlab/conf links to it so the package finds it.
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    from hydra.types import RunMode

    from .errors import USER_ERRORS
    from .reliability import RunFailed, RunInterrupted, record_input_error

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = train(cfg, run_dir)
    except RunInterrupted as stop:  # exit like a process killed by that signal, after saving
        print(f"prefixlab-train: {stop}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except (RunFailed, *USER_ERRORS) as error:  # bad config, model, data, output dir, diverged: one line, no traceback
        if not isinstance(error, RunFailed):
            record_input_error(error, run_dir)
        line = f"prefixlab-train: error: {error}"
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # Hydra's launcher stops the sweep on SystemExit: record this job as failed, let the others run
            print(line, file=sys.stderr)
            return float("nan")
        sys.exit(line)
    return metrics[cfg.optimized_metric]


_NO_RUN_FLAGS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}


def main() -> None:
    """The console entry point: Hydra creates the run directory before ``train`` runs, so a
    directory that cannot be created is reported here, in one line, instead of by Hydra."""
    from .runs import OutputDirError, check_run_dir_creatable

    args = sys.argv[1:]
    if not _NO_RUN_FLAGS.intersection(args):
        multirun = "-m" in args or "--multirun" in args
        key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
        given = [a.lstrip("+").split("=", 1)[1] for a in args if a.lstrip("+").startswith(key)]
        run_dir = (given[-1] if given else ("multirun" if multirun else "outputs")).strip("'\"")
        try:
            check_run_dir_creatable(Path(run_dir.split("${", 1)[0] or "."))
        except OutputDirError as error:
            sys.exit(f"prefixlab-train: error: {error}")
    hydra_main()


if __name__ == "__main__":
    main()
