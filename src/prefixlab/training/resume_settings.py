"""Which settings a resumed run must share with its checkpoint, and the changes it may apply.

A checkpoint carries the run's result-changing settings (``SETTINGS_KEY``, written by
``ResumeSettings``). A resume with any of them changed is refused, naming every differing key
with both values, unless ``resume_allow_changes`` lists the key and the key is one a resume
can apply for real (``APPLIED_ON_RESUME``); the change then reaches the restored optimizer and
schedule, the next checkpoint records the new value, and metrics.json ``resume_changes``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

SETTINGS_KEY = "prefixlab_settings"

# Groups whose every key changes the trained result, a key added later included (the safe
# default: refuse), except those named here with why they do not.
RESULT_GROUPS: dict[str, dict[str, str]] = {
    "model": {
        "gradient_checkpointing": "recomputes the same activations in backward: less memory, the same numbers",
        "trust_remote_code": "permission to run the model's code, not a setting of the model",
    },
    "method": {},
    "optim": {},
    # Evaluation only: validation and test of a resumed run all happen in the resumed process, so
    # the values that process has are the ones applied (mid-run validation curves logged before
    # the interruption are set aside with the old CSV log). test_topics is not here: with
    # train_topics null, the training topics are all but the test topics.
    "task": {
        "val_size": "evaluation only", "test_size": "evaluation only", "eval_batch_size": "evaluation only",
        "validation_file": "evaluation only", "test_file": "evaluation only", "test_categories": "evaluation only",
        "primary_metric": "which metric is reported and selected on",
    },
}
# Result-changing keys outside those groups. trainer.max_steps sets the linear schedule's length;
# devices and num_nodes set the effective batch. Everything else (generation, logger, run_name,
# checkpoint and logging intervals, accelerator, strategy, deterministic, eval_zero_shot) decides
# what is evaluated, logged or where it runs, not what is trained: free to change on resume.
RESULT_KEYS = ("seed", "trainer.max_steps", "trainer.accumulate_grad_batches", "trainer.precision",
               "trainer.gradient_clip_val", "trainer.devices", "trainer.num_nodes",
               "trainer.early_stopping.enabled", "export.checkpoint")
# Early stopping and best.ckpt (training/best_checkpoint.py): recorded only while they are on, where
# they decide when training stops and which weights are exported (and so are free to change while off).
WATCH_KEYS = {
    "trainer.early_stopping.patience": "trainer.early_stopping.enabled",
    "trainer.early_stopping.min_delta": "trainer.early_stopping.enabled",
    "optimized_metric": "watched",
    "trainer.val_check_interval": "watched",
}

# The changes a resume can apply for real, and how they reach training.
APPLIED_ON_RESUME = {
    "optim.lr": "set in the restored AdamW and as the schedule's base rate (ResumeSettings.on_train_start)",
    "optim.weight_decay": "set in the restored AdamW (ResumeSettings.on_train_start)",
    "optim.betas": "set in the restored AdamW (ResumeSettings.on_train_start)",
    "optim.warmup_steps": "the schedule is this run's (its lambda keeps no state in the checkpoint); the rate is recomputed at the resumed step",
    "trainer.max_steps": "the trainer runs to the new total and the linear schedule decays to it, recomputed at the resumed step",
    "trainer.gradient_clip_val": "the trainer is built from this run's config",
    "trainer.accumulate_grad_batches": "the trainer is built from this run's config (checkpoints fall on optimizer steps)",
    "trainer.precision": "the trainer is built from this run's config",
    "model.dtype": "the frozen LM is loaded from this run's config",
    "model.attn_implementation": "the frozen LM is loaded from this run's config",
}
# Why the other result-changing keys cannot be changed on resume (by key, else by group).
_NOT_APPLICABLE = {
    "seed": "the checkpoint's position in the training data is a position in this seed's shuffled order",
    "trainer.devices": "a single process resumes its data position; several shard the data differently",
    "trainer.num_nodes": "a single process resumes its data position; several shard the data differently",
    "trainer.early_stopping.enabled": "the early-stopping count and best.ckpt come from the checkpoint's validations",
    "trainer.early_stopping.patience": "the checkpoint's early-stopping state was counted with its patience (and brings it back)",
    "trainer.early_stopping.min_delta": "the checkpoint's early-stopping state was counted with its min_delta",
    "export.checkpoint": "best.ckpt is tracked only while export.checkpoint=best or early stopping is on",
    "optimized_metric": "the checkpoint's best score and early-stopping count are of its metric",
    "trainer.val_check_interval": "the early-stopping count is in validations at the checkpoint's interval",
    "model": "the trained state belongs to the checkpoint's LM",
    "method": "the trainable part was built and initialized from it",
    "task": "the checkpoint's position in the training data (epoch, examples consumed) would point into other examples",
    "optim": "prefixlab does not know how to apply it to a restored optimizer",
}


def is_result_changing(key: str) -> bool:
    group, _, name = key.partition(".")
    return key in RESULT_KEYS or key in WATCH_KEYS or (group in RESULT_GROUPS and bool(name) and name not in RESULT_GROUPS[group])


def why_not_applicable(key: str) -> str:
    return _NOT_APPLICABLE.get(key) or _NOT_APPLICABLE[key.partition(".")[0]]


def result_settings(resolved: dict) -> dict[str, Any]:
    """The result-changing settings of a resolved config (``OmegaConf.to_container(cfg,
    resolve=True)``), flat: {"optim.lr": 0.01, "seed": 42, ...}. Plain values only, so the
    checkpoint stays loadable with ``weights_only=True``."""
    flat = {f"{group}.{name}": value for group in RESULT_GROUPS for name, value in (resolved.get(group) or {}).items()}
    flat.update({key: _get(resolved, key) for key in RESULT_KEYS})
    settings = {key: value for key, value in flat.items() if is_result_changing(key)}
    stopping = bool(settings["trainer.early_stopping.enabled"])
    on = {"trainer.early_stopping.enabled": stopping, "watched": stopping or settings["export.checkpoint"] == "best"}
    settings.update({key: _get(resolved, key) for key, when in WATCH_KEYS.items() if on[when]})
    return settings


def _get(resolved: dict, key: str) -> Any:
    value: Any = resolved
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def differences(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """{key: (checkpoint's value, this run's)} for every key both record with different values
    (a key the checkpoint lacks was added to prefixlab after it was written: nothing to compare)."""
    return {key: (saved[key], current[key]) for key in current if key in saved and saved[key] != current[key]}


def allow_list_problem(config) -> str | None:
    """One line saying what is wrong with ``config.resume_allow_changes`` (a ``TrainConfig``), or None."""
    from dataclasses import fields, is_dataclass

    known = {f"{top.name}.{inner.name}" if is_dataclass(group) else top.name
             for top in fields(config) for group in [getattr(config, top.name)]
             for inner in (fields(group) if is_dataclass(group) else [top])} | {*RESULT_KEYS, *WATCH_KEYS}
    allowed = ", ".join(APPLIED_ON_RESUME)
    for entry in config.resume_allow_changes:
        if entry in APPLIED_ON_RESUME:
            continue
        if entry in known and is_result_changing(entry):
            return (f"resume_allow_changes: {entry} cannot be changed on resume ({why_not_applicable(entry)}); "
                    f"start fresh (resume=null) instead; the changes a resume can apply: {allowed}")
        what = "is not a setting that changes the result (those are checked on resume; the others may change freely)"
        return f"resume_allow_changes: {entry!r} {what if entry in known else 'is no config key'}; the changes a resume can apply: {allowed}"
    return None


def refusal(path, refused: dict[str, tuple[Any, Any]]) -> str:
    """The one-line message for a resume whose settings differ from its checkpoint's (keys sorted)."""
    refused = dict(sorted(refused.items()))
    was = ", ".join(f"{key}={old!r}" for key, (old, _) in refused.items())
    now = ", ".join(f"{key}={new!r}" for key, (_, new) in refused.items())
    applicable = [key for key in refused if key in APPLIED_ON_RESUME]
    hint = f"; or apply the change with resume_allow_changes=[{','.join(applicable)}]" if applicable else ""
    return (f"checkpoint {path} was made with {was}, this run has {now}; resume with the checkpoint's settings, "
            f"or start fresh (resume=null){hint}")


class ResumeSettings(pl.Callback):
    """Writes the run's result-changing settings into every checkpoint, and applies the changes
    a resume was allowed to make once Lightning has restored the optimizer and schedule (which
    brings back the checkpoint's lr, weight decay and betas over those ``configure_optimizers`` set)."""

    def __init__(self, settings: dict[str, Any], changes: dict[str, list]) -> None:
        self.settings, self.changes = settings, changes

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[SETTINGS_KEY] = dict(self.settings)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.changes:
            apply_optim_settings(trainer.optimizers, [c.scheduler for c in trainer.lr_scheduler_configs], self.settings)


def apply_optim_settings(optimizers, schedulers, settings: dict[str, Any]) -> None:
    """Set this run's lr, weight decay and betas in restored optimizers, make its lr the base of
    each LambdaLR schedule, and recompute the rate for the step training resumes at."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group.update(lr=settings["optim.lr"], initial_lr=settings["optim.lr"], weight_decay=settings["optim.weight_decay"],
                         betas=tuple(settings["optim.betas"]))
    for scheduler in schedulers:
        scheduler.base_lrs = [settings["optim.lr"]] * len(scheduler.optimizer.param_groups)
        lambdas = getattr(scheduler, "lr_lambdas", None)
        if lambdas:  # LambdaLR (the linear warm-up schedule): the rate the next optimizer step uses
            for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, lambdas):
                group["lr"] = base * factor(scheduler.last_epoch)
            scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
