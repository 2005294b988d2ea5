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

    from .datamodule import TaskDataModule
    from .methods import check_method_fits_model
    from .model_loading import load_config
    from .module import PrefixTuningModule
    from .runs import build_logger, build_trainer, check_writable, finish_logger, run_summary, write_results

    model_config = load_config(settings.model.name_or_path)  # a wrong model name fails here, before any weights load
    check_method_fits_model(OmegaConf.to_container(cfg.method, resolve=True), model_config)
    check_writable(run_dir)
    started = time.time()
    pl.seed_everything(settings.seed, workers=True)

    task = settings.task
    datamodule = TaskDataModule(
        task.name, settings.model.name_or_path, task.prompt_style, task.max_source_tokens, task.max_target_tokens,
        task.train_size, task.val_size, task.test_size, task.subset_seed, task.batch_size, task.eval_batch_size,
        seed=settings.seed, is_encoder_decoder=bool(model_config.is_encoder_decoder),
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    module = PrefixTuningModule(
        model=resolved["model"], method=resolved["method"], optim=resolved["optim"],
        generation=resolved["generation"], task_name=task.name,
        eval_zero_shot=settings.eval_zero_shot, max_steps=settings.trainer.max_steps,
    )
    datamodule.setup("fit")
    train_lengths = [len(e.prompt_ids) + len(e.target_ids) for e in datamodule.splits["train"]]
    counts = module.parameter_counts()
    print(run_summary(counts, task.batch_size, settings.trainer.accumulate_grad_batches, 1, sum(train_lengths) / len(train_lengths)))

    logger = build_logger(settings.logger, run_dir, settings.run_name, resolved)
    try:
        trainer = build_trainer(settings.trainer, logger, run_dir)
        trainer.fit(module, datamodule=datamodule)
        val_metrics = trainer.validate(module, datamodule=datamodule)[0]
        test_metrics = trainer.test(module, datamodule=datamodule)[0]
        module.export(run_dir / ("prefix" if module.is_prefix_method else "trained"))
        metrics = {
            "status": "completed",
            "run_name": settings.run_name,
            "steps": trainer.global_step,
            **counts,
            **{k: float(v) for k, v in {**val_metrics, **test_metrics}.items()},
            "runtime_s": round(time.time() - started, 1),
        }
        write_results(run_dir, metrics, module.last_predictions.get("test"))
    finally:
        finish_logger(logger)
    print(f"results: {run_dir} (metrics.json, predictions.jsonl, prefix/)")
    return metrics


# conf/ sits at the repository root; src/prefixlab/conf links to it so the package finds it.
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    from .errors import USER_ERRORS

    try:
        metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except USER_ERRORS as error:  # bad config, model, data or output dir: one line, no traceback
        sys.exit(f"prefixlab-train: error: {error}")
    return metrics[cfg.optimized_metric]


if __name__ == "__main__":
    main()
