"""Packed sweeps: the jobs of a sweep that share a frozen LM train together, in one process.

A prefix job trains a few thousand to a few million parameters against a frozen LM, so a
sweep over prefix lengths, reparameterizations, learning rates or seeds runs the same LM
K times over batches too small to keep a GPU busy. Here the LM is loaded once and every
optimizer step runs all jobs' batches through it together: their rows, sorted by length, go
through the LM in forwards of ``rows_per_forward`` rows (on a CPU the largest job batch, so
that neighbours of equal length carry little padding; on a GPU all rows at once), each row
with its own job's prefix (``stack_prefixes``), so it computes exactly what it computes in
its own run, and each job keeps everything else to itself:

* its data: its own datamodule and shuffled order (its seed), its own batch size;
* its prefix, initialized from its own seed exactly as a single run does it;
* its loss: the mean target loss over its own examples, wherever the forwards put them. The
  step minimizes the sum of the jobs' losses; a job's prefix only reaches its own examples,
  so the gradient each prefix gets is the gradient of its own loss alone, the one its
  separate run computes;
* its AdamW, linear schedule, gradient clipping (by the norm of its own gradients), and
  max_steps (a job whose steps are done drops out of the batch);
* its run directory, logger (CSV or its own W&B run), evaluation, export, metrics.json and
  predictions.jsonl, produced by the same ``PrefixTuningModule`` code as a single run; only
  the generation of its evaluation examples is shared: all jobs' examples are generated
  together in mixed-prefix batches (``generate_for_all_jobs``), each row with its own prefix.

A packed job's per-step losses, final prefix and metrics equal its separate run's within
float tolerance (rows are padded differently and summed in another order; tested).

Not supported (``packing_problem`` refuses them before anything loads): methods that train
the shared LM (finetune, finetune_topk, lora, ia3); ``resume``; validation during training
(``trainer.val_check_interval``); gradient accumulation; precisions other than 32-true and
bf16-mixed; more than one device; encoder-decoder models. Also, unlike a single run: no
checkpoints are written (nothing to resume from), the training curve reaches the logger when
the pack has finished training (so that only one W&B run is open at a time), and with
``method.dropout > 0`` the dropout masks come from one random stream shared by the jobs
(equal in distribution to a separate run, not draw for draw).

Plain torch and Lightning over typed configs; the Hydra launcher that calls this lives in
``src/hydra_plugins/prefixlab_packed_launcher``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from prefixlab.config import TrainConfig, validate
from prefixlab.engine.padding import pad_rows
from prefixlab.methods import get_method, method_names

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
    if settings.resume is not None:
        return "resume is not supported by launcher=packed (packed jobs write no checkpoints)"
    if trainer.val_check_interval is not None:
        return "trainer.val_check_interval is not supported by launcher=packed (jobs are validated after training)"
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
    }, sort_keys=True, default=str)


@dataclass
class PackedJob:
    """One job of a pack: its typed config, the resolved config (for the module and the logger)
    and its run directory (made by the caller). ``logger_identity``: W&B group / job name."""

    settings: TrainConfig
    resolved: dict
    run_dir: Path
    logger_identity: dict = field(default_factory=dict)


@dataclass
class _Running:
    """A job's training state inside the pack."""

    job: PackedJob
    datamodule: Any
    module: Any
    encoder: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    counts: dict
    last_good: Any
    loader: Any = None
    batches: Any = None
    epoch: int = 0
    step: int = 0
    log: list = field(default_factory=list)  # (step, {"train/loss": ..., "lr-AdamW": ..., "epoch": ...})
    error: BaseException | None = None
    index: int = -1  # in the list of jobs given to train_packed

    @property
    def max_steps(self) -> int:
        return self.job.settings.trainer.max_steps

    @property
    def training(self) -> bool:
        return self.error is None and self.step < self.max_steps

    def next_batch(self) -> dict:
        """The next batch in the job's own order; epochs roll over as in Lightning's fit loop
        (which calls ``set_epoch`` on the sampler at each epoch start)."""
        while True:
            if self.batches is None:
                self.loader.sampler.set_epoch(self.epoch)
                self.batches = iter(self.loader)
            try:
                return next(self.batches)
            except StopIteration:
                self.batches, self.epoch = None, self.epoch + 1


def _trainer_at(step: int) -> SimpleNamespace:
    """What the reliability helpers read from a Lightning trainer (a pack is one process: rank 0)."""
    return SimpleNamespace(global_step=step, is_global_zero=True)


def _device(settings: TrainConfig) -> torch.device:
    accelerator = settings.trainer.accelerator
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _length_sorted_forwards(batches: list[dict], pad_id: int, rows_per_forward: int | None) -> list[tuple]:
    """All jobs' rows, sorted by length and cut into forwards of ``rows_per_forward`` rows (None:
    one forward), each left-padded to its own longest row: [(job of each row, ids, mask, labels)].

    A job's batch is padded to its longest row whatever the order; K jobs' rows concatenated
    and padded to the longest of all would cost more than the K batches alone. Sorted, neighbours
    have nearly equal lengths, so forwards of a job's batch size carry less padding than the jobs'
    own batches (``bench/padding.py`` measures both; README, Benchmarks). Rows are
    independent in a transformer and each job's loss sums over its own rows, so the order and
    grouping change only the float order. The batches are left-padded (real tokens last)."""
    rows = []
    for job, batch in enumerate(batches):
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            real = mask.bool()
            rows.append((job, ids[real], labels[real]))
    rows.sort(key=lambda row: len(row[1]))  # stable: equal lengths keep the jobs' order
    size = rows_per_forward or len(rows)
    forwards = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        ids, mask = pad_rows([row[1] for row in chunk], pad_id, left=True)
        labels, _ = pad_rows([row[2] for row in chunk], -100, left=True)
        forwards.append((torch.tensor([row[0] for row in chunk]), ids, mask, labels))
    return forwards


def _token_losses(shared, input_ids, attention_mask, labels, prefix) -> torch.Tensor:
    """Cross-entropy of every next-token target, [rows, columns] (0 where there is none). As in ``PrefixedCausalLM.target_loss``, only the columns that hold targets go
    through the LM head (targets are the last columns of a left-padded batch)."""
    supervised = (labels != -100).any(dim=0).nonzero()
    first = int(supervised[0]) if len(supervised) else labels.shape[1] - 1
    keep = min(labels.shape[1] - first + 1, labels.shape[1])
    logits = shared(input_ids, attention_mask, prefix=prefix, logits_to_keep=keep).logits[:, :-1].float()
    targets = labels[:, labels.shape[1] - keep + 1 :]
    return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")


def _gradient_leaves(activations):
    """Detached copies of a job's prefix keys/values that collect the gradient of every forward
    of the step; the job's encoder gets it in one backward at the end (``_backward_into_encoder``)."""
    from prefixlab.engine.injection import PrefixActivations, SitePrefix

    return PrefixActivations({name: SitePrefix(p.keys.detach().requires_grad_(), p.values.detach().requires_grad_(),
                                               p.mask, p.visible_from) for name, p in activations.sites.items()})


def _backward_into_encoder(activations, leaves) -> None:
    """The gradient the leaves collected, on through the encoder (its MLP) to its parameters."""
    pairs = [(getattr(activations.sites[name], part), getattr(leaf, part).grad)
             for name, leaf in leaves.sites.items() for part in ("keys", "values")]
    pairs = [(tensor, grad) for tensor, grad in pairs if grad is not None and tensor.requires_grad]
    if pairs:
        torch.autograd.backward([tensor for tensor, _ in pairs], [grad for _, grad in pairs])


def _prepare_job(job: PackedJob, shared, model_config, device, rng_after_loading) -> _Running:
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
    optimizers = module.configure_optimizers()  # AdamW over this job's prefix only, and its linear schedule
    train_lengths = [len(e.prompt_ids) + len(e.target_ids) for e in datamodule.splits["train"]]
    counts = module.parameter_counts()
    print(f"[{job.run_dir}] " + run_summary(counts, task.batch_size, 1, 1, sum(train_lengths) / len(train_lengths)))
    check_free_space(job.run_dir, storage_needed(counts))
    running = _Running(job, datamodule, module, encoder, optimizers["optimizer"],
                       optimizers["lr_scheduler"]["scheduler"], counts, LastGoodState())
    running.loader = datamodule.train_dataloader()
    return running


def _forward_backward(running: list, batches: list[dict], shared, pad_id: int, device, precision: str,
                      rows_per_forward: int | None = None) -> list:
    """Every job's loss and its prefix's gradient, from forwards over all jobs' rows
    (``_length_sorted_forwards``; each row with its own job's prefix) with a backward after
    each. Returns [(job, loss)] for the jobs whose loss is finite; the others get ``error``, as
    the single run's training_step raises, and their rows send nothing into any backward.

    A job's loss is its mean target loss over all its rows (``target_loss`` of its batch): each
    forward adds its rows' summed token losses divided by the job's target count of the whole
    batch. The step minimizes the sum of the jobs' losses; a prefix reaches only its own rows,
    so d(sum)/d(prefix_j) = d(loss_j)/d(prefix_j). The prefix is computed once per job (its MLP
    runs once) and its gradient flows back through the encoder once, after the last forward."""
    from prefixlab.engine.mixing import stack_prefixes, with_visibility

    forwards = _length_sorted_forwards(batches, pad_id, rows_per_forward)
    target_counts = [0] * len(running)
    for jobs, _, _, labels in forwards:
        for job, count in zip(jobs.tolist(), (labels[:, 1:] != -100).sum(dim=1).tolist()):
            target_counts[job] += count
    infix = [get_method(r.job.settings.method.name).target_only for r in running]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        activations = [r.encoder() for r in running]
    leaves = [_gradient_leaves(a) for a in activations]
    losses: list[torch.Tensor | float] = [0.0] * len(running)
    failed: set[int] = set()
    for jobs, input_ids, attention_mask, labels in forwards:
        input_ids, attention_mask, labels = input_ids.to(device), attention_mask.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            prefix = stack_prefixes([leaves[job] for job in jobs.tolist()])
            infix_rows = torch.tensor([infix[job] for job in jobs.tolist()], device=device)
            if infix_rows.any():  # an infix row sees its prefix from its last prompt token on
                first_target = (labels != -100).long().argmax(dim=1)
                prefix = with_visibility(prefix, torch.where(infix_rows, first_target - 1, 0))
            token_loss = _token_losses(shared, input_ids, attention_mask, labels, prefix)
        jobs = jobs.to(device)
        terms = []
        for job in sorted(set(jobs.tolist())):
            term = token_loss[jobs == job].sum() / target_counts[job]
            losses[job] = losses[job] + term.detach()
            if not torch.isfinite(term):
                failed.add(job)
            elif job not in failed:
                terms.append(term)
        if terms:
            torch.stack(terms).sum().backward()
    finite = []
    for job, r in enumerate(running):
        if job in failed:
            r.error = FloatingPointError(f"loss is {float(losses[job])} at step {r.step}; lower optim.lr")
        else:
            _backward_into_encoder(activations[job], leaves[job])
            finite.append((r, losses[job]))
    return finite


def _train_step(running: list[_Running], shared, pad_id: int, device, precision: str,
                rows_per_forward: int | None = None) -> None:
    """One optimizer step of every job in ``running``: forwards and backwards over all their batches."""
    batches = [r.next_batch() for r in running]
    for r in running:
        r.optimizer.zero_grad(set_to_none=True)
    finite = _forward_backward(running, batches, shared, pad_id, device, precision, rows_per_forward)
    for r, loss in finite:
        params = [p for p in r.encoder.parameters() if p.requires_grad]
        r.log.append((r.step, {"train/loss": float(loss), "lr-AdamW": r.optimizer.param_groups[0]["lr"],
                               "epoch": r.epoch}))
        r.last_good.on_before_optimizer_step(_trainer_at(r.step), r.encoder, r.optimizer)
        clip = r.job.settings.trainer.gradient_clip_val
        if clip:  # Lightning's gradient_clip_val: by the global norm of this job's gradients only
            torch.nn.utils.clip_grad_norm_(params, clip)
        r.optimizer.step()
        r.scheduler.step()
        r.step += 1


EVAL_STAGES = (("val", "validation"), ("test", "test"))  # the module's stage name, the datamodule's split


@torch.no_grad()
def generate_for_all_jobs(running: list[_Running], shared, device, precision: str) -> int:
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

    groups: dict[str, list[_Running]] = {}
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
        rows = [(r, stage, position, encoded.prompt_ids)
                for r in members for stage, split in EVAL_STAGES
                for position, encoded in enumerate(r.datamodule.splits[split])]
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
                        for position, encoded in enumerate(r.datamodule.splits[split])]
                for stage, split in EVAL_STAGES
            }
    return calls


def _finish_job(r: _Running, shared, started: float, packed_jobs: int) -> dict:
    """Evaluate, export and write the results of one trained job, as ``train.train`` does."""
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
                              tags=tags, parameter_counts=r.counts)
        every = settings.trainer.log_every_n_steps
        for step, values in r.log:
            if (step + 1) % every == 0:
                logger.log_metrics(values, step=step)
        if r.error is not None:
            raise r.error
        # validate/test only: one device, whatever trainer.devices says (packed_problem allows auto or 1)
        trainer = build_trainer(dataclasses.replace(settings.trainer, devices="1"), logger, run_dir,
                                callbacks=logger_callbacks(settings.logger))
        # evaluation metrics are logged at the step training ended, as in a single run
        trainer.fit_loop.epoch_loop._batches_that_stepped = r.step
        val_metrics = trainer.validate(r.module, datamodule=r.datamodule)[0]
        test_metrics = trainer.test(r.module, datamodule=r.datamodule)[0]
        r.module.export(run_dir / "prefix")
        metrics = {
            "status": "completed",
            "run_name": settings.run_name,
            "steps": r.step,
            "packed_jobs": packed_jobs,
            **r.counts,
            **{k: float(v) for k, v in {**val_metrics, **test_metrics}.items()},
            "runtime_s": round(time.time() - started, 1),
        }
        write_results(run_dir, metrics, r.module.last_predictions.get("test"))
        print(f"results: {run_dir} (metrics.json, predictions.jsonl, prefix/)")
        return metrics
    except Exception as error:  # this job failed; the pack's other jobs are unaffected
        outcome = record_failure(error, run_dir, r.module, _trainer_at(r.step),
                                 r.last_good, summary, started)
        print(f"prefixlab-train: error: [{run_dir}] {outcome}", file=sys.stderr)
        return json.loads((run_dir / "metrics.json").read_text())
    finally:
        finish_logger(logger, run_dir / "metrics.json")


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


def train_packed(jobs: list[PackedJob], rows_per_forward: int | None = None) -> list[dict]:
    """Train ``jobs`` (which must share ``pack_key``) together; returns each job's metrics.json
    content, in order (``status`` completed or failed). One job's bad config or divergence
    fails that job only; an error of the shared forward fails every job still training.
    ``rows_per_forward``: rows per forward of a step (``choose_rows_per_forward``)."""
    from prefixlab.errors import USER_ERRORS
    from prefixlab.engine.families import adapter_for_model_type
    from prefixlab.training.model_loading import load_config
    from prefixlab.training.lm_module import load_frozen_lm
    from prefixlab.engine.prefixed_lm import PrefixedCausalLM
    from prefixlab.training.reliability import record_failure

    started = time.time()
    if rows_per_forward_problem(rows_per_forward):
        raise PackingError(rows_per_forward_problem(rows_per_forward))
    results: list[dict | None] = [None] * len(jobs)
    valid: list[int] = []
    for i, job in enumerate(jobs):
        try:
            validate(job.settings)
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

    import pytorch_lightning as pl

    from prefixlab.training.cpu_memory import keep_freed_memory

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
    pad_id = None
    running: list[_Running] = []
    for i in valid:
        try:
            running.append(_prepare_job(jobs[i], shared, model_config, device, rng_after_loading))
            running[-1].index = i
            pad_id = running[-1].datamodule.pad_id
        except (*USER_ERRORS, PackingError) as error:
            results[i] = _record_input_error(jobs[i], error)
    forward_rows = choose_rows_per_forward(rows_per_forward, device, [r.job.settings.task.batch_size for r in running])
    print(f"packed: {len(running)} jobs share one {model_config.model_type} LM on {device}; "
          f"{sum(r.job.settings.task.batch_size for r in running)} examples per step while all train "
          f"(rows per forward: {forward_rows or 'all'})")
    precision = str(first.trainer.precision)
    try:
        while any(r.training for r in running):
            active = [r for r in running if r.training]
            _train_step(active, shared, pad_id, device, precision, forward_rows)
            step = max(r.step for r in active)
            if step % first.trainer.log_every_n_steps == 0:
                print(f"packed step {step}: " + " ".join(
                    f"{r.job.run_dir.name}={r.log[-1][1]['train/loss']:.4f}" for r in active if r.log and r.error is None))
    except Exception as error:  # an error of the shared step: every job still training fails with it
        print(f"prefixlab-train: error: the packed step failed: {type(error).__name__}: {error}", file=sys.stderr)
        for r in running:
            if r.training:
                r.error = error
    except BaseException as error:  # a signal (Ctrl-C, SIGTERM): every job of the pack says so; the sweep stops
        outcome = error
        for r in running:  # none has been evaluated yet: each gets its metrics.json now
            shared.prefix_encoder = r.encoder
            summary = {"run_name": r.job.settings.run_name, **r.counts}
            if r.error is not None:  # it had failed before the signal (diverged: its last good prefix is exported)
                record_failure(r.error, r.job.run_dir, r.module, _trainer_at(r.step), r.last_good, summary, started)
            else:
                outcome = record_failure(error, r.job.run_dir, r.module, _trainer_at(r.step), None, summary, started)
        raise outcome from error
    try:
        generate_for_all_jobs(running, shared, device, precision)
    except Exception as error:  # then each job generates its own, as a single run does
        print(f"prefixlab-train: warning: mixed-prefix evaluation failed ({type(error).__name__}: {error}); "
              "each job generates its own predictions", file=sys.stderr)
        for r in running:
            r.module.prepared_predictions = {}
    for r in running:
        results[r.index] = _finish_job(r, shared, started, len(running))
    return results


def optimized_value(metrics: dict, optimized_metric: str) -> float:
    """What the sweep sees for a job: its optimized metric, NaN for a job that did not complete."""
    if metrics.get("status") != "completed" or optimized_metric not in metrics:
        return math.nan
    return float(metrics[optimized_metric])
