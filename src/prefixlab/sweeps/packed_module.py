"""A pack as one LightningModule: K jobs' prefixes around one frozen LM, trained by ``Trainer.fit``.

* ``PackedPrefixModule`` holds the shared LM once and the K jobs' prefix encoders as submodules.
  Manual optimization: one AdamW with one parameter group per job (its lr, weight decay and
  betas) and one ``LambdaLR`` with one linear warm-up schedule per group, so that the Trainer
  counts one global step per packed step (K optimizers would count K). Each job's gradients are
  clipped by their own norm; a job whose ``max_steps`` are done, or whose loss diverged, gets no
  gradient (``grad`` stays None), and AdamW skips such parameters entirely: no weight decay, no
  moment update (tested: a finished job's prefix stays equal while the others train).
* ``PackedBatches`` is the pack's training "dataloader": per step one batch per job that still
  trains, each from its job's own ``ResumableDataLoader`` order (own seed, batch size, epochs).
  Its ``state_dict`` is every job's epoch and position, so Lightning's checkpoint carries it
  and a resumed pack continues every job's order exactly, as a resumed single run does.
* The Trainer provides the device, the precision (autocast for bf16-mixed), atomic periodic
  checkpoints of the trainable state only (``<pack dir>/checkpoints/last.ckpt``), resume, and
  SIGINT/SIGTERM handling (``StopOnSignal``: the step finishes, the checkpoint is written), and
  the progress: the step, the ETA and each job's latest loss (``packed_progress``).

Each job's training curve is kept in the module (and in the checkpoint) and reaches the job's
own logger after training (``packed_eval.finish_job``), so only one W&B run is open at a time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from prefixlab.sweeps.packed_progress import PackProgress, job_label
from prefixlab.sweeps.packed_step import forward_backward

CHECKPOINT = Path("checkpoints") / "last.ckpt"  # inside the pack's folder, <sweep dir>/pack-<first job number>


@dataclass
class PackedJobState:
    """One job of a pack while it trains: its config, data, module (for evaluation and export),
    prefix encoder, and where it is (``step``, ``error``, ``log``: (step, {"train/loss", "lr-AdamW",
    "epoch"}) per step). ``index``: its position in the list given to ``train_packed``."""

    job: Any  # packed.PackedJob
    datamodule: Any
    module: Any  # its PrefixTuningModule, around the shared LM
    encoder: torch.nn.Module
    counts: dict
    last_good: Any  # reliability.LastGoodState
    index: int = -1
    loader: Any = None
    step: int = 0
    log: list = field(default_factory=list)
    error: BaseException | None = None
    resumed_at: int | None = None

    @property
    def max_steps(self) -> int:
        return self.job.settings.trainer.max_steps

    @property
    def training(self) -> bool:
        return self.error is None and self.step < self.max_steps


class PackedBatches:
    """Per packed step: {"batches": [one batch per job, None for a job whose steps are done],
    "epochs": [each job's epoch]}; a job's epochs roll over as in Lightning's fit loop (``set_epoch``
    on its sampler at each epoch start). The length is the largest job's max_steps (one Lightning
    epoch is the whole pack), so Lightning knows it and fetches no batch ahead of the step: the
    saved positions are those of the batches trained."""

    def __init__(self, loaders: list, max_steps: list[int]) -> None:
        self.loaders, self.max_steps = loaders, max_steps
        self.step = 0
        self.epochs = [0] * len(loaders)

    def __len__(self) -> int:
        return max(self.max_steps)

    def __iter__(self):
        iterators: list = [None] * len(self.loaders)
        while self.step < len(self):
            batches = []
            for j, loader in enumerate(self.loaders):
                if self.step >= self.max_steps[j]:  # this job is done: it consumes no more data
                    batches.append(None)
                    continue
                while True:
                    if iterators[j] is None:
                        loader.sampler.set_epoch(self.epochs[j])
                        iterators[j] = iter(loader)
                    try:
                        batches.append(next(iterators[j]))
                        break
                    except StopIteration:
                        iterators[j], self.epochs[j] = None, self.epochs[j] + 1
            self.step += 1
            yield {"batches": batches, "epochs": list(self.epochs)}

    def state_dict(self) -> dict:
        return {"step": self.step, "jobs": [loader.state_dict() for loader in self.loaders]}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        for j, (loader, job_state) in enumerate(zip(self.loaders, state["jobs"], strict=True)):
            loader.load_state_dict(job_state)
            self.epochs[j] = int(job_state["epoch"])


def _linear_warmup(warmup_steps: int, total_steps: int):
    """transformers' ``get_linear_schedule_with_warmup`` factor (the single run's schedule), for one group."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return float(step) / float(max(1, warmup_steps))
        return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))

    return factor


class PackedPrefixModule(pl.LightningModule):
    """K jobs' prefix encoders (``encoders``, one per job) trained against one frozen LM (``shared``).

    ``training_step`` takes one ``PackedBatches`` item: every training job's batch, [rows, tokens]
    each, left-padded. Only ``encoders.*`` go into checkpoints, with each job's step, curve and
    failure (``packed_jobs``)."""

    def __init__(self, shared, jobs: list[PackedJobState], pad_id: int, rows_per_forward: int | None,
                 started: float) -> None:
        super().__init__()
        self.automatic_optimization = False  # K jobs share a step; each clips and schedules its own group
        self.strict_loading = False  # checkpoints hold no frozen-LM weights by design
        self.shared = shared  # a submodule, so the Trainer moves it to the device
        self.encoders = torch.nn.ModuleList([j.encoder for j in jobs])
        self.jobs, self.pad_id, self.rows_per_forward, self.started = jobs, pad_id, rows_per_forward, started
        self.save_hyperparameters({"jobs": [job_identity(j.job) for j in jobs]})

    def train(self, mode: bool = True):
        super().train(mode)
        self.shared.lm.eval()  # the frozen LM never uses dropout (as in PrefixTuningModule)
        return self

    def configure_optimizers(self):
        groups, schedules = [], []
        for j in self.jobs:
            optim = j.job.resolved["optim"]
            groups.append({"params": [p for p in j.encoder.parameters() if p.requires_grad], "lr": optim["lr"],
                           "weight_decay": optim["weight_decay"], "betas": tuple(optim["betas"])})
            schedules.append(_linear_warmup(optim["warmup_steps"], j.max_steps))
        optimizer = torch.optim.AdamW(groups)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch: dict, batch_idx: int) -> None:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        active = [(k, j) for k, j in enumerate(self.jobs) if j.training]
        optimizer.zero_grad(set_to_none=True)  # a job that does not train now keeps grad None: AdamW skips it
        finite = forward_backward([j for _, j in active], [batch["batches"][k] for k, _ in active],
                                  self.shared, self.pad_id, self.device, self.rows_per_forward)
        losses = {id(j): loss for j, loss in finite}
        for k, j in active:
            if j.error is not None:  # diverged in this step: recorded now, the others go on
                self._record_divergence(j)
                continue
            group = optimizer.param_groups[k]
            j.log.append((j.step, {"train/loss": float(losses[id(j)]), "lr-AdamW": group["lr"],
                                   "epoch": batch["epochs"][k]}))
            j.last_good.on_before_optimizer_step(self.trainer, j.encoder, optimizer)
            clip = j.job.settings.trainer.gradient_clip_val
            if clip:  # Lightning's gradient_clip_val: by the global norm of this job's gradients only
                torch.nn.utils.clip_grad_norm_(group["params"], clip)
        optimizer.step()
        scheduler.step()
        for _, j in active:
            if j.error is None:
                j.step += 1
        if self.trainer.progress_bar_callback is not None:  # each job's latest loss beside the bar (packed_progress)
            for _, j in active:
                if j.error is None:
                    self.log(f"loss/{job_label(j)}", j.log[-1][1]["train/loss"], prog_bar=True, on_step=True, on_epoch=False)
        if not any(j.training for j in self.jobs):
            self.trainer.should_stop = True  # every job failed before the longest one's max_steps

    def _record_divergence(self, j: PackedJobState) -> None:
        from prefixlab.training.reliability import record_failure

        self.shared.prefix_encoder = j.encoder  # the job's module exports through the shared wrapper
        try:
            outcome = record_failure(j.error, j.job.run_dir, j.module, self.trainer, j.last_good,
                                     {"run_name": j.job.settings.run_name, **j.counts}, self.started)
        finally:
            self.shared.prefix_encoder = None
        print(f"prefixlab-train: error: [{j.job.run_dir}] {outcome}", file=sys.stderr)

    def state_dict(self, *args, **kwargs):
        """The jobs' encoders, never the frozen LM (as every frozen-backbone module's checkpoint)."""
        from prefixlab.training.frozen_backbone import drop_frozen_weights

        return drop_frozen_weights(self, super().state_dict(*args, **kwargs), f"shared.{self.shared.MODEL_ATTRIBUTE}.",
                                   kwargs.get("prefix", ""))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["packed_jobs"] = [{"step": j.step, "log": j.log, "error": None if j.error is None else str(j.error)}
                                     for j in self.jobs]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for j, saved in zip(self.jobs, checkpoint["packed_jobs"], strict=True):
            j.step, j.log, j.resumed_at = int(saved["step"]), [tuple(entry) for entry in saved["log"]], checkpoint["global_step"]
            if saved["error"] is not None:  # diverged before the interruption: its metrics.json says so already
                j.error = FloatingPointError(saved["error"])


def job_identity(job) -> dict:
    """What a pack checkpoint must agree on with the jobs resuming from it."""
    settings = job.settings
    return {"run_name": settings.run_name, "method": job.resolved["method"], "task_name": settings.task.name,
            "model": settings.model.name_or_path, "seed": settings.seed, "max_steps": settings.trainer.max_steps,
            "batch_size": settings.task.batch_size}


def read_pack_checkpoint(path: Path, jobs: list) -> int:
    """Check that ``path`` is this pack's checkpoint (same jobs, in order) before anything loads;
    returns its global step. Raises CheckpointError naming the file and the difference."""
    from prefixlab.training.resume import CheckpointError

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # data only, never code
    except Exception as error:
        raise CheckpointError(f"pack checkpoint {path} cannot be read ({type(error).__name__}); it is truncated or "
                              "corrupted: delete it to start the pack fresh") from error
    if not isinstance(checkpoint, dict) or "packed_jobs" not in checkpoint:
        raise CheckpointError(f"{path} is not a packed sweep's checkpoint (no packed_jobs)")
    saved, current = checkpoint["hyper_parameters"]["jobs"], [job_identity(job) for job in jobs]
    if len(saved) != len(current):
        raise CheckpointError(f"pack checkpoint {path} holds {len(saved)} jobs, this pack has {len(current)}; "
                              "resume with the same sweep, or write elsewhere (another hydra.sweep.dir)")
    for number, (was, now) in enumerate(zip(saved, current)):
        for key in now:
            if key != "run_name" and was.get(key) != now[key]:
                raise CheckpointError(f"pack checkpoint {path}: job {number} was made with {key}={was.get(key)!r}, "
                                      f"this sweep has {key}={now[key]!r}; resume with the same sweep, or write elsewhere")
    return int(checkpoint["global_step"])


def build_pack_trainer(trainer_config, max_steps: int, pack_dir: Path, callbacks: list, checkpoint_every: int) -> pl.Trainer:
    """The pack's Trainer: one device, the jobs' precision, no logger (each job logs to its own),
    atomic ``<pack_dir>/checkpoints/last.ckpt`` every ``checkpoint_every`` steps, the step bar of
    single runs or, without it, ``PackProgress``'s lines. (Test harnesses patch this function,
    as ``runs.build_trainer`` for single runs.)"""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from prefixlab.run.progress import progress_callbacks
    from prefixlab.run.runs import AtomicCheckpointIO

    checkpoint = ModelCheckpoint(dirpath=str(pack_dir / CHECKPOINT.parent), save_last=True, save_top_k=0,
                                 every_n_train_steps=checkpoint_every, enable_version_counter=False)
    # with the bar: the single runs' step bar, each job's latest loss beside it; without: PackProgress's lines
    progress = progress_callbacks(trainer_config.enable_progress_bar)
    if not trainer_config.enable_progress_bar:
        progress.append(PackProgress(trainer_config.log_every_n_steps))
    return pl.Trainer(
        default_root_dir=str(pack_dir),
        max_steps=max_steps, max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0,
        accelerator=trainer_config.accelerator, devices=1, precision=trainer_config.precision,
        deterministic=trainer_config.deterministic, enable_progress_bar=trainer_config.enable_progress_bar,
        enable_model_summary=False, logger=False, callbacks=[checkpoint, *progress, *callbacks],
        plugins=[AtomicCheckpointIO()],
    )
