"""prefixlab-train: compose the config, build data, model and trainer, fit, test, export.

    prefixlab-train                                  # the embedded default (BBC headlines, SmolLM2)
    prefixlab-train method.prefix_length=20 optim.lr=1e-4
    prefixlab-train model=minilm task=bbc_topic      # an encoder: P-tuning v2 prefix + classifier head
    prefixlab-train -m method.prefix_length=1,5,10   # a Hydra sweep into multirun/
    prefixlab-train --cfg job                        # print the composed config
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from prefixlab.config import TrainConfig, register_configs, validate

register_configs()
# Run directories carry milliseconds and the process id, so jobs started together never share one.
# Cached like Hydra's ${now:}: a sweep's jobs copy the cache, so jobs run in other processes
# (joblib, submitit) land in the sweep folder of the process that started it.
OmegaConf.register_new_resolver("pid", lambda: os.getpid(), replace=True, use_cache=True)


@dataclass
class Preflight:
    """What the checks before any weights load found: the resolved config, the model's config, and
    the checkpoint to resume from with what it recorded (None: a fresh start)."""

    settings: TrainConfig
    resolved: dict
    model_config: Any
    run_settings: dict  # what must match a checkpoint's; every checkpoint records it
    resume_from: Optional[Path]
    saved: Optional[dict]  # the checkpoint's step, shapes and the allowed changes
    changes: dict


def preflight(cfg: DictConfig, run_dir: Path) -> Preflight:
    """Every check that needs no weights, cheapest first, so a bad config, model name, folder,
    size or checkpoint fails in one line before anything loads."""
    settings: TrainConfig = OmegaConf.to_object(cfg)
    validate(settings)
    from prefixlab.methods import check_method_fits_model
    from prefixlab.run.artifacts import remove_stale_temporaries
    from prefixlab.run.folder_lock import check_no_unfinished_run
    from prefixlab.run.loggers import check_loggers
    from prefixlab.run.storage import check_writable
    from prefixlab.training.limits import check_limits
    from prefixlab.training.model_loading import load_config
    from prefixlab.training.resume import LAST_CHECKPOINT, find_checkpoint, read_checkpoint
    from prefixlab.training.resume_settings import result_settings

    check_loggers(settings.logger)  # W&B online without credentials, a logger not installed
    check_writable(run_dir)
    check_no_unfinished_run(run_dir, settings.resume, run_dir / LAST_CHECKPOINT)  # never overwrite a run's checkpoint
    for leftover in remove_stale_temporaries(run_dir):  # a save killed midway left these behind
        print(f"removed {leftover}, a temporary file of an interrupted save")
    model_config = load_config(settings.model.name_or_path, trust_remote_code=settings.model.trust_remote_code)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    check_method_fits_model(resolved["method"], model_config)
    check_limits(settings, model_config)  # sizes the model or this machine cannot hold
    resume_from = find_checkpoint(settings.resume, run_dir)
    run_settings = result_settings(resolved)
    saved = read_checkpoint(resume_from, resolved["model"], resolved["method"], settings.task.name, run_settings,
                            settings.resume_allow_changes) if resume_from else None
    return Preflight(settings, resolved, model_config, run_settings, resume_from, saved, saved["changes"] if saved else {})


def build_data_and_module(plan: Preflight):
    """The DataModule, then the LightningModule (data errors, e.g. a hub dataset offline, come
    before the LM loads): a BERT-family encoder gets a task head (+ P-tuning v2 prefix), a
    generative LM the prefix-tuning module."""
    from prefixlab.training.encoder_module import build_encoder_run, is_encoder_model
    from prefixlab.training.lm_module import PrefixTuningModule
    from prefixlab.training.resume import ResumableDataModule

    settings, resolved = plan.settings, plan.resolved
    if is_encoder_model(plan.model_config):
        return build_encoder_run(settings, resolved)
    datamodule = ResumableDataModule.for_run(settings, bool(plan.model_config.is_encoder_decoder))
    datamodule.setup("fit")
    module = PrefixTuningModule(
        model=resolved["model"], method=resolved["method"], optim=resolved["optim"],
        generation=resolved["generation"], task_name=settings.task.name,
        eval_zero_shot=settings.eval_zero_shot, max_steps=settings.trainer.max_steps,
    )
    return datamodule, module


def train(cfg: DictConfig, run_dir: Path) -> dict:
    plan = preflight(cfg, run_dir)  # nothing below runs on a bad config, model, folder or checkpoint
    from prefixlab.run.hydra_files import forget

    forget(run_dir)  # accepted: Hydra's new .hydra/ files stand (a refusal above puts the folder's old ones back)
    settings, resolved, resume_from, saved, changes = plan.settings, plan.resolved, plan.resume_from, plan.saved, plan.changes
    import pytorch_lightning as pl

    from prefixlab.run.runs import (build_logger, build_trainer, check_free_space, check_launchable, finish_logger,
                                    logger_callbacks, run_summary, storage_needed, wandb_tags, write_results)
    from prefixlab.training.best_checkpoint import Monitoring
    from prefixlab.training.final_validation import FitValidations
    from prefixlab.training.reliability import LastGoodState, StopOnSignal, record_failure
    from prefixlab.training.resume import LAST_CHECKPOINT, check_trainable_state
    from prefixlab.training.resume_settings import ResumeSettings

    task = settings.task
    started = time.time()
    pl.seed_everything(settings.seed, workers=True)
    datamodule, module = build_data_and_module(plan)
    mean_tokens = datamodule.mean_train_tokens()
    if saved:
        check_trainable_state(resume_from, saved["shapes"], module)
        print(f"resuming from {resume_from} (step {saved['global_step']})"
              + "".join(f"; {key}: {old!r} -> {new!r}" for key, (old, new) in changes.items()))
    counts = module.parameter_counts()
    check_free_space(run_dir, storage_needed(counts))

    tags = wandb_tags(task.name, settings.model.name_or_path, settings.model.random_init, settings.method.name, settings.logger.tags)
    logger = build_logger(settings.logger, run_dir, settings.run_name, resolved, **wandb_identity(), tags=tags, parameter_counts=counts,
                          resume=resume_from is not None)  # the same W&B / MLflow runs continue
    summary = {"run_name": settings.run_name, **counts}
    stop = StopOnSignal(run_dir / LAST_CHECKPOINT,  # a second signal exits at once, after writing metrics.json
                        on_forced_stop=lambda error: record_failure(error, run_dir, module, trainer, None, summary, started))
    last_good, fit_validations, trainer = LastGoodState(), FitValidations(), None
    stop.listen()  # fit, validate, test and the moments between them
    try:
        monitoring = Monitoring.of(settings)  # early stopping and checkpoints/best.ckpt, if asked for
        trainer = build_trainer(settings.trainer, logger, run_dir, callbacks=[stop, last_good, fit_validations, ResumeSettings(plan.run_settings, changes),
                                                                           *logger_callbacks(settings.logger)], monitoring=monitoring)
        check_launchable(trainer, in_sweep=HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN")
        if trainer.is_global_zero:
            print(run_summary(counts, task.batch_size, settings.trainer.accumulate_grad_batches, trainer.world_size, mean_tokens))
            if monitoring is not None:
                print(monitoring.describe(settings.trainer.val_check_interval))
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)  # checked above
        stop.stop_if_received(trainer)
        # export.checkpoint=best: the best weights go into the module here, so the final metrics score what is exported
        exported = (monitoring.choose_export(trainer, module) if monitoring is not None
                    else {"exported_checkpoint": "last", "exported_step": trainer.global_step})
        # fit validated the exported weights at their step already (the last step's or the best one's):
        # the same numbers, not computed twice nor logged again at the last step
        val_metrics = fit_validations.metrics_at(exported["exported_step"])
        if val_metrics is None:
            val_metrics = trainer.validate(module, datamodule=datamodule)[0]
        elif trainer.is_global_zero:
            print(f"validation: training's, at step {exported['exported_step']} (the {exported['exported_checkpoint']} weights, exported)")
        test_metrics = trainer.test(module, datamodule=datamodule)[0]
        # a smoke test (a batch or a few of each split) is no result: no export, no predictions, its own status
        smoke_test = bool(settings.trainer.fast_dev_run)
        if trainer.is_global_zero and not smoke_test:  # the other ranks hold the same prefix and the same gathered predictions
            module.export(run_dir / ("prefix" if module.is_prefix_method else "trained"))
        metrics = {
            "status": "fast_dev_run" if smoke_test else "completed",
            "run_name": settings.run_name,
            "steps": trainer.global_step,
            **({"resumed_from": str(resume_from), "resumed_at_step": saved["global_step"]} if saved else {}),
            **({"resume_changes": changes} if changes else {}),
            **({} if smoke_test else exported),  # a smoke test exports nothing
            **counts,
            **{k: float(v) for k, v in {**val_metrics, **test_metrics}.items()},
            "runtime_s": round(time.time() - started, 1),
        }
        if trainer.is_global_zero:
            write_results(run_dir, metrics, None if smoke_test else module.last_predictions.get("test"))
            if not smoke_test:  # the export's README.md: what it is, its metrics, how to load it
                from prefixlab.run.model_card import write_model_card

                write_model_card(run_dir, module, resolved, metrics)
    except BaseException as error:  # metrics.json says what happened: interrupted or failed, at which step
        raise record_failure(error, run_dir, module, trainer, last_good, summary, started)
    finally:
        stop.stop_listening()
        finish_logger(logger, run_dir / "metrics.json")
    print(f"fast_dev_run: the pipeline ran end to end; nothing exported ({run_dir}/metrics.json: status fast_dev_run)"
          if settings.trainer.fast_dev_run else f"results: {run_dir} (metrics.json, predictions.jsonl, prefix/)")
    return metrics


def wandb_identity() -> dict:
    """The W&B group and name of this job, from Hydra: group = the sweep folder (``<date>/<time>``;
    a single run: none, so its run name), name = the overrides this job differs in (in a sweep,
    only the swept keys), e.g. ``prefix_length=5,lr=0.001``."""
    if not HydraConfig.initialized():
        return {}
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    overrides = [o for o in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)) if o.value() is not None]
    group = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        group = "/".join(Path(hydra_cfg.sweep.dir).parts[-2:])
        # the sweep as typed: Hydra saves it in <sweep dir>/multirun.yaml before any job starts
        # (jobs of other launchers may run in other processes); a search preset's params too
        saved = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
        try:
            typed = OmegaConf.load(saved).hydra.overrides.task if saved.is_file() else sys.argv[1:]
            swept = {o.key_or_group for o in OverridesParser.create().parse_overrides(
                [a for a in typed if not a.startswith("-")]) if o.is_sweep_override()}
        except Exception:  # an argument the parser does not take: name the job from all its overrides
            swept = set()
        swept |= set(hydra_cfg.sweeper.get("params") or {})
        overrides = [o for o in overrides if o.key_or_group in swept] or overrides
    leaves = [o.key_or_group.rsplit(".", 1)[-1] for o in overrides]
    parts = [f"{leaf if leaves.count(leaf) == 1 else o.key_or_group}={o.get_value_element_as_str()}"
             for leaf, o in zip(leaves, overrides)]
    return {"group": group, "job_name": ",".join(parts)[:128] or None,
            "sweep_dir": str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None}  # the sweep's MLflow store


# conf/ sits at the repository root; src/prefixlab/conf links to it so the package finds it.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    from prefixlab.cli.errors import run_job

    def keep_folder() -> tuple[type, ...]:  # a refused resume of this run: its metrics.json stays
        from prefixlab.training.resume import ResumeSettingsError

        return (ResumeSettingsError,)

    return run_job("prefixlab-train", cfg, lambda run_dir: train(cfg, run_dir)[cfg.optimized_metric], keep_folder=keep_folder)


_NO_RUN_FLAGS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}


def main() -> None:
    """The console entry point: Hydra creates the run directory before ``train`` runs, so a
    directory that cannot be created is reported here, in one line, instead of by Hydra."""
    from prefixlab.cli.errors import run_hydra
    from prefixlab.run.storage import OutputDirError, check_run_dir_creatable  # no torch: --help answers at once

    args = sys.argv[1:]
    if "--help" in args or "-h" in args:  # the keys and their help texts, from the schemas (cli/help.py)
        from prefixlab.cli.help import print_help

        print_help("prefixlab-train", __doc__ or "", TrainConfig, Path(CONFIG_DIR), "train")
        return
    held = ExitStack()  # a sweep's folder lock, for the whole sweep
    if not _NO_RUN_FLAGS.intersection(args):
        multirun = "-m" in args or "--multirun" in args
        key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
        given = [a.lstrip("+").split("=", 1)[1] for a in args if a.lstrip("+").startswith(key)]
        run_dir = (given[-1] if given else ("multirun" if multirun else "outputs")).strip("'\"")
        try:
            check_run_dir_creatable(Path(run_dir.split("${", 1)[0] or "."))
            if given and not multirun and "${" not in run_dir and Path(run_dir).is_dir():
                # before Hydra writes its .hydra/ config into the folder of another run
                from prefixlab.run.folder_lock import check_no_unfinished_run, check_not_running
                from prefixlab.training.resume import LAST_CHECKPOINT

                check_not_running(Path(run_dir))
                resume = [a.split("=", 1)[1] for a in args if a.lstrip("+").startswith("resume=")]
                check_no_unfinished_run(Path(run_dir), None if not resume or resume[-1] in ("null", "None", "") else resume[-1],
                                        Path(run_dir) / LAST_CHECKPOINT)
            if given and multirun and "${" not in run_dir:
                # one sweep per sweep folder, whatever the launcher (a job folder is locked by its job):
                # a second sweep is refused before Hydra rewrites the first one's multirun.yaml
                from prefixlab.run.folder_lock import RunFolderLock

                held.enter_context(RunFolderLock(Path(run_dir), key="hydra.sweep.dir"))
            if given and "${" not in run_dir and Path(run_dir).is_dir():
                # Hydra is about to rewrite .hydra/ there; a run refused before it trains puts these back
                from prefixlab.run.hydra_files import remember

                for folder in [p for p in Path(run_dir).iterdir() if p.is_dir()] if multirun else [Path(run_dir)]:
                    remember(folder)  # a sweep: each job folder (resume=auto of a sweep reuses them)
        except OutputDirError as error:
            held.close()
            sys.exit(f"prefixlab-train: error: {error}")
    with held:
        run_hydra("prefixlab-train", hydra_main)


if __name__ == "__main__":
    main()
