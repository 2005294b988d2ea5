"""Packed sweeps: the jobs of a sweep that share a frozen LM train together, in one process.

A prefix job trains a few thousand to a few million parameters against a frozen LM, so a
sweep over prefix lengths, reparameterizations, learning rates or seeds runs the same LM
K times over batches too small to keep a GPU busy. Here the LM is loaded once and the K jobs'
prefixes train as one LightningModule (``packed_module.PackedPrefixModule``) under one
``Trainer.fit``: every step runs all jobs' batches through the LM together, their rows sorted by
length in forwards of ``rows_per_forward`` rows, each row with its own job's prefix
(``packed_step``), so it computes exactly what it computes in its own run, and each job keeps
everything else to itself:

* its data: its own datamodule and shuffled order (its seed), its own batch size;
* its prefix, initialized from its own seed exactly as a single run does it;
* its loss: the mean target loss over its own examples; a prefix reaches only its own examples,
  so the gradient each prefix gets is the gradient of its own loss alone;
* its AdamW hyperparameters (its parameter group of the pack's one AdamW), linear schedule,
  gradient clipping (by the norm of its own gradients) and max_steps (a job whose steps are done
  drops out of the batch and its parameters stay as they are);
* its run directory, logger (CSV or its own W&B run), evaluation, export, metrics.json and
  predictions.jsonl, produced by the same ``PrefixTuningModule`` code as a single run; only
  the generation of its evaluation examples is shared (``packed_eval.generate_for_all_jobs``).

A packed job's per-step losses, final prefix and metrics equal its separate run's within
float tolerance (rows are padded differently and summed in another order; tested).

Like a single run, a pack writes atomic checkpoints of its trainable state
(``<pack dir>/checkpoints/last.ckpt``; the launcher's pack dir is ``<sweep dir>/pack-<first job
number>``), resumes from them with ``resume=auto`` bit-identically (every job's data position is
in the checkpoint), and stops on SIGINT/SIGTERM after the current step with a checkpoint and
``status: interrupted`` in each job's metrics.json.

Not supported (``packing_problem`` refuses them before anything loads): methods that train
the shared LM (finetune, finetune_topk, lora, ia3); ``resume=<path>`` (a pack resumes from its
own folder: ``resume=auto``); validation during training (``trainer.val_check_interval``);
gradient accumulation; precisions other than 32-true and bf16-mixed; more than one device;
encoder-decoder models. The training curve reaches each job's logger when the pack has finished
training (so that only one W&B run is open at a time), and with ``method.dropout > 0`` the
dropout masks come from one random stream shared by the jobs (equal in distribution to a
separate run, not draw for draw).

Plain torch and Lightning over typed configs; the Hydra launcher that calls this lives in
``src/hydra_plugins/prefixlab_packed_launcher``.
"""


import dataclasses
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prefixlab.config import TrainConfig, validate
from prefixlab.methods import method_names
from prefixlab.sweeps import packed_module
from prefixlab.sweeps.packed_module import CHECKPOINT, PackedJobState

PACKABLE_PRECISIONS = ("32-true", "32", "bf16-mixed")


class PackingError(ValueError):
    """These jobs cannot be trained packed (the message says why and what to do instead)."""


def packing_problem(settings: TrainConfig) -> str | None:
    """Why this job cannot be trained in a pack, or None. Only the config is read: nothing loads."""
    method, trainer = settings.method.name, settings.trainer
    packable = method_names(packable=True)  # the prefix methods (MethodSpec.packable)
    if method not in packable:
        return (f"method={method} trains the LM that packed jobs share; launcher=packed takes "
                f"{', '.join(packable)} (run this sweep without launcher=packed)")
    if settings.resume not in (None, "auto"):
        return (f"resume={settings.resume}: launcher=packed resumes each pack from its own checkpoint in the sweep "
                "folder; rerun the sweep with resume=auto and the same hydra.sweep.dir")
    for key, asked in (("trainer.early_stopping.enabled=true", trainer.early_stopping.enabled),
                       ("export.checkpoint=best", settings.export.checkpoint == "best")):
        if asked:  # both need validation during training, which a pack does not run
            return f"{key} is not supported by launcher=packed (a pack trains every job to its max_steps and exports that step)"
    # A pack validates every job once, after its last step: the same as a validation interval that
    # first falls at max_steps (the experiment configs set it to max_steps), not a periodic one.
    if trainer.val_check_interval is not None and trainer.val_check_interval < trainer.max_steps:
        return (f"trainer.val_check_interval={trainer.val_check_interval} is not supported by launcher=packed "
                "(jobs are validated once, after their last step: use null or trainer.max_steps)")
    if trainer.accumulate_grad_batches != 1:
        return "trainer.accumulate_grad_batches > 1 is not supported by launcher=packed"
    if str(trainer.precision) not in PACKABLE_PRECISIONS:
        return f"trainer.precision={trainer.precision} is not supported by launcher=packed ({', '.join(PACKABLE_PRECISIONS)})"
    if str(trainer.devices) not in ("auto", "1"):
        return f"trainer.devices={trainer.devices}: launcher=packed trains on one device (auto or 1)"
    if trainer.accelerator not in ("auto", "cpu", "gpu", "cuda"):
        return f"trainer.accelerator={trainer.accelerator} is not supported by launcher=packed (auto, cpu, gpu, cuda)"
    return None


def pack_key(settings: TrainConfig) -> str:
    """Jobs with equal keys can share one loaded LM and its forwards.

    The model settings decide the LM; a random-init LM is drawn from the job's seed, so its
    jobs share it only with jobs of the same seed. Device and precision are per forward.
    Task, data sizes and batch sizes may differ: every job has its own datamodule.
    """
    model = dataclasses.asdict(settings.model)
    return json.dumps({
        "model": model,
        "seed": settings.seed if settings.model.random_init else None,
        "accelerator": settings.trainer.accelerator,
        "precision": str(settings.trainer.precision),
        "deterministic": settings.trainer.deterministic,
        "resume": settings.resume,  # a pack resumes or starts fresh as a whole
    }, sort_keys=True, default=str)


@dataclass
class PackedJob:
    """One job of a pack: its typed config, the resolved config (for the module and the logger)
    and its run directory (made by the caller). ``logger_identity``: W&B group / job name."""

    settings: TrainConfig
    resolved: dict
    run_dir: Path
    logger_identity: dict = field(default_factory=dict)




def _device(settings: TrainConfig) -> torch.device:
    accelerator = settings.trainer.accelerator
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _prepare_job(job: PackedJob, shared, model_config, device, rng_after_loading) -> PackedJobState:
    """What ``train.train`` builds for one run, around the shared LM, in the same order (seed,
    datamodule, module) so that the job's prefix starts from the same random numbers."""
    import pytorch_lightning as pl

    from prefixlab.methods import check_method_fits_model
    from prefixlab.training.lm_module import PrefixTuningModule
    from prefixlab.training.reliability import LastGoodState
    from prefixlab.training.resume import ResumableDataModule
    from prefixlab.run.runs import check_free_space, check_writable, run_summary, storage_needed

    settings, resolved, task = job.settings, job.resolved, job.settings.task
    check_writable(job.run_dir)
    check_method_fits_model(resolved["method"], model_config)
    pl.seed_everything(settings.seed, workers=True)
    datamodule = ResumableDataModule.for_run(settings, bool(model_config.is_encoder_decoder))
    datamodule.setup("fit")  # before the module, as in train.train
    if rng_after_loading is not None:
        # A random-init LM draws its weights from the seed; the single run's prefix init then
        # continues from there. The pack loaded that LM once, under this same seed (pack_key).
        torch.set_rng_state(rng_after_loading)
    module = PrefixTuningModule(
        model=resolved["model"], method=resolved["method"], optim=resolved["optim"],
        generation=resolved["generation"], task_name=task.name,
        eval_zero_shot=settings.eval_zero_shot, max_steps=settings.trainer.max_steps, preloaded=shared,
    )
    encoder = shared.prefix_encoder.to(device)
    encoder.train()
    counts = module.parameter_counts()
    print(f"[{job.run_dir}] " + run_summary(counts, task.batch_size, 1, 1, datamodule.mean_train_tokens()))
    check_free_space(job.run_dir, storage_needed(counts))
    return PackedJobState(job, datamodule, module, encoder, counts, LastGoodState(), loader=datamodule.train_dataloader())



def _record_input_error(job: PackedJob, error: BaseException) -> dict:
    from prefixlab.training.reliability import record_input_error

    print(f"prefixlab-train: error: [{job.run_dir}] {error}", file=sys.stderr)
    record_input_error(error, job.run_dir)
    return {"status": "failed", "error": f"{type(error).__name__}: {error}", "step": 0}


def rows_per_forward_problem(requested: int | None) -> str | None:
    """Why ``hydra.launcher.rows_per_forward`` cannot be used, or None (checked before anything loads)."""
    if requested is not None and requested < 1:
        return f"hydra.launcher.rows_per_forward={requested}: give a number of rows >= 1, or null for the default"
    return None


def choose_rows_per_forward(requested: int | None, device: torch.device, batch_sizes: list[int]) -> int | None:
    """How many rows go through the LM in one forward of a packed step (None: all of them).

    On a CPU the arithmetic per row is the same in any batch size, so the forwards are as small
    as the jobs' own batches (the largest ``task.batch_size``): the rows, sorted by length, carry
    less padding than the jobs' own batches, and the activations stay the size of a single run's
    (``bench/rows_per_forward.py`` measures the cost per row by forward size; README, Benchmarks).
    On a GPU a batch of 8 leaves the device idle, so all rows go in one forward (set
    ``hydra.launcher.rows_per_forward`` to cap it when memory is short)."""
    if requested is not None:
        return requested
    return max(batch_sizes) if device.type == "cpu" else None




def train_packed(jobs: list[PackedJob], rows_per_forward: int | None = None, pack_dir: Path | None = None) -> list[dict]:
    """Train ``jobs`` (which must share ``pack_key``) together; returns each job's metrics.json
    content, in order (``status`` completed or failed). One job's bad config or divergence
    fails that job only; an error of the shared forward fails every job still training; a
    signal stops the pack after the current step (``RunInterrupted``, every job interrupted).
    ``rows_per_forward``: rows per forward of a step (``choose_rows_per_forward``). ``pack_dir``:
    where the pack's checkpoints go (``resume=auto`` continues from ``<pack_dir>/checkpoints/last.ckpt``);
    None: a temporary folder, removed at the end."""
    from prefixlab.errors import USER_ERRORS
    from prefixlab.engine.families import adapter_for_model_type
    from prefixlab.run.loggers import check_loggers
    from prefixlab.training.model_loading import load_config

    started = time.time()
    if rows_per_forward_problem(rows_per_forward):
        raise PackingError(rows_per_forward_problem(rows_per_forward))
    results: list[dict | None] = [None] * len(jobs)
    valid: list[int] = []
    for i, job in enumerate(jobs):
        try:
            validate(job.settings)
            check_loggers(job.settings.logger)
            problem = packing_problem(job.settings)
            if problem:
                raise PackingError(problem)
            valid.append(i)
        except (*USER_ERRORS, PackingError) as error:
            results[i] = _record_input_error(job, error)
    if len({pack_key(jobs[i].settings) for i in valid}) > 1:
        raise ValueError("train_packed takes jobs of one pack_key; group them first")
    if not valid:
        return results
    first = jobs[valid[0]].settings
    resume_from = None
    if pack_dir is not None and first.resume == "auto":
        if (pack_dir / CHECKPOINT).is_file():  # checked before anything loads (raises CheckpointError)
            resume_from = pack_dir / CHECKPOINT
            print(f"resuming the pack from {resume_from} "
                  f"(step {packed_module.read_pack_checkpoint(resume_from, [jobs[i] for i in valid])})")
        else:
            print(f"resume=auto: no checkpoint at {pack_dir / CHECKPOINT}, starting the pack fresh")
    try:
        model_config = load_config(first.model.name_or_path, trust_remote_code=first.model.trust_remote_code)  # a wrong model name fails here, before loading
        adapter = adapter_for_model_type(model_config.model_type)
        if adapter.is_encoder_decoder or adapter.is_encoder_only:
            raise PackingError(f"launcher=packed trains decoder-only LMs; {model_config.model_type!r} is not one "
                               "(run this sweep without launcher=packed)")
    except (*USER_ERRORS, PackingError) as error:
        for i in valid:
            results[i] = _record_input_error(jobs[i], error)
        return results
    temporary = None
    if pack_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="prefixlab-pack-")
        pack_dir = Path(temporary.name)
    try:
        return _train(jobs, valid, results, model_config, rows_per_forward, pack_dir, resume_from, started)
    finally:
        if temporary is not None:
            temporary.cleanup()


def _train(jobs, valid, results, model_config, rows_per_forward, pack_dir: Path, resume_from, started: float) -> list[dict]:
    """Load the LM once, prepare every job around it, fit the pack, evaluate every job."""
    import pytorch_lightning as pl

    from prefixlab.errors import USER_ERRORS
    from prefixlab.engine.prefixed_lm import PrefixedCausalLM
    from prefixlab.sweeps.packed_eval import finish_job, generate_for_all_jobs
    from prefixlab.training.cpu_memory import keep_freed_memory
    from prefixlab.training.lm_module import load_frozen_lm
    from prefixlab.training.reliability import RunInterrupted, StopOnSignal

    first = jobs[valid[0]].settings
    device = _device(first)
    if device.type == "cpu":  # a packed step's activations exceed malloc's mmap threshold (cpu_memory.py)
        keep_freed_memory()
    pl.seed_everything(first.seed, workers=True)
    before = torch.get_rng_state()
    lm = load_frozen_lm(jobs[valid[0]].resolved["model"])
    rng_after_loading = torch.get_rng_state()
    if torch.equal(before, rng_after_loading):
        rng_after_loading = None  # loading drew nothing (a pretrained LM): every job starts from its own seed
    elif len({jobs[i].settings.seed for i in valid}) > 1:  # pack_key keeps random-init LMs to one seed
        error = PackingError("loading this LM draws random numbers, so jobs with different seeds cannot share it "
                             "(run this sweep without launcher=packed)")
        return [results[i] if i not in valid else _record_input_error(jobs[i], error) for i in range(len(jobs))]
    shared = PrefixedCausalLM(lm.to(device), None)
    running: list[PackedJobState] = []
    for i in valid:
        try:
            running.append(_prepare_job(jobs[i], shared, model_config, device, rng_after_loading))
            running[-1].index = i
        except (*USER_ERRORS, PackingError) as error:
            results[i] = _record_input_error(jobs[i], error)
    if not running:
        return results
    shared.prefix_encoder = None  # each job's prefix goes into the forwards explicitly (or is set for its evaluation)
    forward_rows = choose_rows_per_forward(rows_per_forward, device, [r.job.settings.task.batch_size for r in running])
    print(f"packed: {len(running)} jobs share one {model_config.model_type} LM on {device}; "
          f"{sum(r.job.settings.task.batch_size for r in running)} examples per step while all train "
          f"(rows per forward: {forward_rows or 'all'})")
    module = packed_module.PackedPrefixModule(shared, running, running[0].datamodule.pad_id, forward_rows, started)
    batches = packed_module.PackedBatches([r.loader for r in running], [r.max_steps for r in running])
    every = min(r.job.settings.trainer.checkpoint_every_n_steps or max(1, min(50, r.max_steps)) for r in running)
    stop = StopOnSignal(pack_dir / CHECKPOINT)
    trainer = packed_module.build_pack_trainer(first.trainer, max(r.max_steps for r in running), pack_dir, [stop], every)
    precision = str(first.trainer.precision)
    finished: set[int] = set()
    stop.listen()  # SIGINT / SIGTERM from here to the last job's results
    try:
        try:
            trainer.fit(module, train_dataloaders=batches, ckpt_path=resume_from, weights_only=True)  # checked above
            stop.stop_if_received(trainer)
        except RunInterrupted:
            raise  # a signal: handled below, with the others
        except Exception as error:  # an error of the shared step: every job still training fails with it
            print(f"prefixlab-train: error: the packed step failed: {type(error).__name__}: {error}", file=sys.stderr)
            _record_all(running, error, shared, trainer, started)
        module.to(device)  # the Trainer hands the module back on the CPU
        try:
            generate_for_all_jobs(running, shared, device, precision)
        except Exception as error:  # then each job generates its own, as a single run does
            print(f"prefixlab-train: warning: mixed-prefix evaluation failed ({type(error).__name__}: {error}); "
                  "each job generates its own predictions", file=sys.stderr)
            for r in running:
                r.module.prepared_predictions = {}
        for r in running:
            if stop.received is not None:
                raise RunInterrupted(stop.received, trainer.global_step, pack_dir / CHECKPOINT, "evaluation")
            results[r.index] = finish_job(r, shared, started, len(running))
            finished.add(r.index)
    except BaseException as error:  # a signal (Ctrl-C, SIGTERM): every unfinished job says so; the sweep stops
        raise _record_all([r for r in running if r.index not in finished], error, shared, trainer, started) from error
    finally:
        stop.stop_listening()
    return results


def _record_all(running: list[PackedJobState], error: BaseException, shared, trainer, started: float) -> BaseException:
    """``error`` into the metrics.json of every job that has not failed on its own; returns what
    the caller raises (``record_failure``'s outcome)."""
    from prefixlab.training.reliability import record_failure

    outcome = error
    for r in running:
        if r.error is not None:  # diverged before: its metrics.json says so already
            continue
        shared.prefix_encoder = r.encoder
        r.error = error
        outcome = record_failure(error, r.job.run_dir, r.module, trainer, None,
                                 {"run_name": r.job.settings.run_name, **r.counts}, started)
    shared.prefix_encoder = None
    return outcome


def optimized_value(metrics: dict, optimized_metric: str) -> float:
    """What the sweep sees for a job: its optimized metric, NaN for a job that did not complete."""
    if metrics.get("status") != "completed" or optimized_metric not in metrics:
        return math.nan
    return float(metrics[optimized_metric])

