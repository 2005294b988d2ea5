"""After a pack trains: every job's evaluation examples generated together, then each job's
validation, test, export and result files, written exactly as a single run writes them.

The generation is shared (``generate_for_all_jobs``: mixed-prefix batches, each row with its own
job's prefix); scoring, logging and export stay each job's own (its ``PrefixTuningModule`` under
its own Trainer and logger, one W&B run at a time).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from types import SimpleNamespace

import pytorch_lightning as pl
import torch

from prefixlab.methods import get_method

EVAL_STAGES = (("val", "validation"), ("test", "test"))  # the module's stage name, the datamodule's split


def evaluated_examples(r, stage: str, split: str) -> list:
    """The examples of ``split`` that the job's validate/test will score: its loader's batches up to
    Lightning's limit (``trainer.fast_dev_run``, else ``limit_val_batches`` / ``limit_test_batches``:
    a count, or a fraction of the batches rounded down, as Lightning does), so that a pack generates
    no prediction that is never scored, as a single run, which generates batch by batch."""
    trainer = r.job.settings.trainer
    loader = r.datamodule.val_dataloader() if stage == "val" else r.datamodule.test_dataloader()
    batches = len(loader)
    if trainer.fast_dev_run:
        limit = int(trainer.fast_dev_run)  # true counts as 1 batch, as in Lightning
    else:
        limit = trainer.limit_val_batches if stage == "val" else trainer.limit_test_batches
    if isinstance(limit, float):
        limit = int(batches * limit)
    examples = list(r.datamodule.splits[split])
    return examples if limit >= batches else examples[: limit * loader.batch_size]


@torch.no_grad()
def generate_for_all_jobs(running: list, shared, device, precision: str) -> int:
    """Every job's validation and test predictions, generated in mixed-prefix batches.

    A single run generates its evaluation examples batch by batch with its own prefix; here the
    examples of all jobs with the same generation settings are sorted by prompt length (less
    padding) and generated together, each row with its own job's prefix (``stack_prefixes``;
    an infix job's rows see theirs from the last prompt token on, as in ``generate_text``), in
    batches as large as the jobs' evaluation batches together (one ``generate_mixed`` call per
    batch). Small decoding batches leave a GPU idle, and on a CPU, too, fewer larger batches
    took less time than the jobs' own batches (``bench/``; README, Benchmarks). Every row
    equals its job generating it alone (tested); the predictions go to each job's module
    (``prepared_predictions``), whose validate/test then score them. Returns how many
    generate() calls were made.
    """
    from prefixlab.engine.mixing import generate_mixed

    groups: dict[str, list] = {}
    for r in running:
        if r.error is None:
            groups.setdefault(json.dumps(r.module.hparams.generation, sort_keys=True), []).append(r)
    calls = 0
    for members in groups.values():
        tokenizer, generate_kwargs = members[0].module.tokenizer, members[0].module.generate_kwargs()
        prefixes = {}
        for r in members:  # as evaluation sees it: eval mode (no dropout), computed once
            was_training = r.encoder.training
            r.encoder.eval()
            prefixes[r.index] = r.encoder().detached()
            r.encoder.train(was_training)
        evaluated = {(r.index, stage): evaluated_examples(r, stage, split) for r in members for stage, split in EVAL_STAGES}
        rows = [(r, stage, position, encoded.prompt_ids)
                for r in members for stage, _ in EVAL_STAGES
                for position, encoded in enumerate(evaluated[(r.index, stage)])]
        rows.sort(key=lambda row: len(row[3]))
        rows_per_batch = sum(r.job.settings.task.eval_batch_size for r in members)
        outputs: dict[tuple[int, str, int], str] = {}
        for start in range(0, len(rows), rows_per_batch):
            chunk = rows[start : start + rows_per_batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                new_tokens = generate_mixed(
                    shared, [list(row[3]) for row in chunk], [prefixes[r.index] for r, *_ in chunk],
                    pad_token_id=tokenizer.pad_token_id,
                    infix_rows=[get_method(r.job.settings.method.name).target_only for r, *_ in chunk], **generate_kwargs,
                )
            calls += 1
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for (r, stage, position, _), text in zip(chunk, texts):
                outputs[(r.index, stage, position)] = text.strip()
        for r in members:
            r.module.prepared_predictions = {
                stage: [(encoded.example.id, outputs[(r.index, stage, position)])
                        for position, encoded in enumerate(evaluated[(r.index, stage)])]
                for stage, _ in EVAL_STAGES
            }
    return calls



class LogAtTrainingEnd(pl.Callback):
    """A packed job's evaluation metrics go to its logger at the step and epoch where its training
    ended, as in a single run, whose evaluation runs on the Trainer that trained; the job's
    evaluation Trainer never trained (the pack trained on another). Lightning takes a logged
    ``step`` metric as the row's step (``LoggerConnector.log_metrics``) and writes ``epoch`` as
    given; neither goes into metrics.json (``KEYS``)."""

    KEYS = ("step", "epoch")

    def __init__(self, r) -> None:
        # after fit, a single run's Trainer counts the epoch that max_steps stopped in as done
        self.step, self.epoch = r.step, (r.log[-1][1]["epoch"] + 1 if r.log else 0)

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("step", float(self.step))
        pl_module.log("epoch", float(self.epoch))

    on_validation_epoch_end = on_test_epoch_end = _log


def finish_job(r, shared, started: float, packed_jobs: int) -> dict:
    """Log the job's training curve, then evaluate, export and write its results, as ``train.train``
    does; a job that diverged during training (recorded then, ``PackedPrefixModule``) only logs."""
    from prefixlab.training.reliability import record_failure
    from prefixlab.run.runs import build_logger, build_trainer, finish_logger, logger_callbacks, wandb_tags, write_results

    settings, run_dir = r.job.settings, r.job.run_dir
    shared.prefix_encoder = r.encoder  # the shared wrapper serves one job's module at a time
    summary = {"run_name": settings.run_name, **r.counts}
    tags = wandb_tags(settings.task.name, settings.model.name_or_path, settings.model.random_init,
                      settings.method.name, settings.logger.tags)
    logger = None
    try:
        logger = build_logger(settings.logger, run_dir, settings.run_name, r.job.resolved, **r.job.logger_identity,
                              tags=tags, parameter_counts=r.counts, resume=r.resumed_at is not None)
        every = settings.trainer.log_every_n_steps
        for step, values in r.log:
            if (step + 1) % every == 0:
                for each in logger:  # build_logger returns the list of the loggers turned on
                    each.log_metrics(values, step=step)
        if r.error is not None:
            return json.loads((run_dir / "metrics.json").read_text())
        # validate/test only: one device, whatever trainer.devices says (packing_problem allows auto or 1)
        trainer = build_trainer(dataclasses.replace(settings.trainer, devices="1"), logger, run_dir,
                                callbacks=[*logger_callbacks(settings.logger, step=r.step), LogAtTrainingEnd(r)])
        val_metrics = trainer.validate(r.module, datamodule=r.datamodule)[0]
        test_metrics = trainer.test(r.module, datamodule=r.datamodule)[0]
        r.module.export(run_dir / "prefix")
        metrics = {
            "status": "completed",
            "run_name": settings.run_name,
            "steps": r.step,
            "packed_jobs": packed_jobs,
            **({"resumed_at_step": r.resumed_at} if r.resumed_at is not None else {}),
            **r.counts,
            **{k: float(v) for k, v in {**val_metrics, **test_metrics}.items() if k not in LogAtTrainingEnd.KEYS},
            "runtime_s": round(time.time() - started, 1),
        }
        write_results(run_dir, metrics, r.module.last_predictions.get("test"))
        from prefixlab.run.model_card import write_model_card

        write_model_card(run_dir, r.module, r.job.resolved, metrics)  # the job's prefix/README.md, as a single run's
        print(f"results: {run_dir} (metrics.json, predictions.jsonl, prefix/)")
        return metrics
    except Exception as error:  # this job failed; the pack's other jobs are unaffected
        # the step this job's training ended at (its evaluation Trainer never trained)
        at = SimpleNamespace(global_step=r.step, is_global_zero=True)
        outcome = record_failure(error, run_dir, r.module, at, None, summary, started)
        print(f"prefixlab-train: error: [{run_dir}] {outcome}", file=sys.stderr)
        return json.loads((run_dir / "metrics.json").read_text())
    finally:
        finish_logger(logger, run_dir / "metrics.json")
