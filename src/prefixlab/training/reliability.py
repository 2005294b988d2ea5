"""What a run does when something goes wrong while it trains or evaluates.

* SIGINT / SIGTERM (``StopOnSignal``), from the start of ``fit`` to the end of ``test``:
  during training the current optimizer step finishes, ``last.ckpt`` is written and the run
  stops with ``status: interrupted`` and the step (``resume=auto`` continues); during
  evaluation ``generate()`` ends at the next decoding step and the run stops after that batch
  (training had finished and ``last.ckpt`` holds its last step: ``resume=auto`` goes straight
  to evaluation). A second signal stops at once: ``metrics.json`` is written, then the process
  exits with 128 + the signal number.
* A non-finite loss (``module.training_step`` raises FloatingPointError): the run stops with
  ``status: failed``; the last periodic checkpoint stays as it was, and the prefix exported is
  the last one whose loss was finite (``LastGoodState`` keeps a copy of the trainable
  parameters from before each optimizer step).
* Out of memory (torch.OutOfMemoryError, MemoryError) or a full disk (ENOSPC): one line saying
  which and what to lower or free, ``status: failed`` with ``last_checkpoint_step``.
* Anything else: ``status: failed`` with the error, then the error propagates as before.

``metrics.json`` always says which of these happened (written atomically, like every artifact).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from transformers import StoppingCriteria

from prefixlab.run.runs import write_results


class RunInterrupted(Exception):
    """The run stopped on a signal (after writing a checkpoint, if it came during training)."""

    APP = "prefixlab-train"  # the command a forced stop's line names

    def __init__(self, signum: int, step: int, checkpoint: Path | None, during: str = "training",
                 at_once: bool = False) -> None:
        self.signum, self.step, self.checkpoint, self.during, self.at_once = signum, step, checkpoint, during, at_once
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint yet"
        how = "stopped at once on a second signal " if at_once else ""
        stage = "" if during == "training" else f" during {during}"
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}{stage}; {how}{where} "
                         "(continue with resume=auto and the same hydra.run.dir)")


class EvaluationInterrupted(RunInterrupted):
    """``prefixlab-eval`` stopped on a signal. It has no checkpoint and no ``resume``: the same
    command evaluates again from the start."""

    APP = "prefixlab-eval"

    def __init__(self, signum: int, step: int = 0, checkpoint: Path | None = None, during: str = "evaluation",
                 at_once: bool = False) -> None:
        Exception.__init__(self, f"interrupted by {signal.Signals(signum).name} during {during}; "
                                 f"{'stopped at once on a second signal; ' if at_once else ''}no predictions written "
                                 "(run the same command again to evaluate)")
        self.signum, self.step, self.checkpoint, self.during, self.at_once = signum, 0, None, during, at_once


class RunFailed(RuntimeError):
    """Training failed for a reason the user can act on (a non-finite loss, out of memory, a full disk); one line."""


class _StopRequested(StoppingCriteria):
    """Ends ``generate()`` at the next decoding step, for every row, once a stop was asked for."""

    def __init__(self, stop: "StopOnSignal") -> None:
        self.stop = stop

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.stop.received is not None, dtype=torch.bool, device=input_ids.device)


class StopOnSignal(pl.Callback):
    """SIGINT and SIGTERM ask for a stop at the next optimizer-step boundary in training and at
    the next decoding step / batch boundary in evaluation; a second one stops at once.

    ``listen()`` / ``stop_listening()`` hold the handlers for the whole run (also between
    ``fit``, ``validate`` and ``test``). Lightning installs its own SIGTERM handler at the start
    of every stage (it would end training mid-accumulation without a checkpoint, and ignore
    SIGTERM during the last evaluation batch), so each stage's start puts ours back over it and
    its end returns Lightning's, which Lightning then replaces by what it found (ours).
    ``on_forced_stop`` records the run (metrics.json) before a second signal exits.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    # The same signal again within this many seconds is the same request, not "stop at once": a
    # scheduler that signals every process (SLURM preemption, `kill` of a process group) and a sweep
    # that passes the signal on to its jobs deliver it twice within milliseconds, and that must not
    # cost the step's checkpoint.
    REPEAT_WINDOW_S = 1.0

    def __init__(self, checkpoint_path: Path, on_forced_stop: Callable[[RunInterrupted], object] | None = None,
                 interrupted: type[RunInterrupted] = RunInterrupted) -> None:
        """interrupted: what a stop raises (``prefixlab-eval``: ``EvaluationInterrupted``, which has
        nothing to resume); its ``APP`` is the command a forced stop's line names."""
        self.checkpoint_path = Path(checkpoint_path)
        self.on_forced_stop = on_forced_stop
        self.interrupted = interrupted
        self.received: int | None = None
        self._received_at = 0.0
        self.criterion = _StopRequested(self)
        self._outer: dict[int, object] = {}  # before listen()
        self._previous: dict[int, object] = {}  # Lightning's, during a stage
        self._step_at_batch_start = -1
        self._saved_step: int | None = None
        self._trainer: pl.Trainer | None = None

    # ---- handlers -----------------------------------------------------------------------------
    def _handle(self, signum: int, frame) -> None:
        now = time.monotonic()
        if self.received is not None:
            if signum == self.received and now - self._received_at < self.REPEAT_WINDOW_S:
                print(f"\nreceived {signal.Signals(signum).name} again within {self.REPEAT_WINDOW_S:g} s: the same request "
                      "(passed on by a sweep or a scheduler); send it again later to stop at once", file=sys.stderr, flush=True)
                return
            self._force_stop(signum)  # asked twice: stop now
        self.received, self._received_at = signum, now
        print(f"\nreceived {signal.Signals(signum).name}: stopping after the current step or decoding step "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def _force_stop(self, signum: int) -> None:
        self._put_back(self._previous)
        self._put_back(self._outer)
        trainer = self._trainer
        checkpoint = self.checkpoint_path if self.checkpoint_path.is_file() else None
        error = self.interrupted(signum, trainer.global_step if trainer is not None else 0, checkpoint,
                                 _stage(trainer), at_once=True)
        try:
            if self.on_forced_stop is not None:
                self.on_forced_stop(error)
        finally:  # whatever recording did: this signal means "now"
            print(f"{error.APP}: {error}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(128 + signum)

    def _swap(self) -> dict[int, object]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be set from the main thread
        previous = {}
        for signum in self.SIGNALS:
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return previous

    @staticmethod
    def _put_back(handlers: dict[int, object]) -> None:
        for signum, handler in handlers.items():
            if handler is not None:
                signal.signal(signum, handler)
        handlers.clear()

    def listen(self) -> None:
        """Catch SIGINT / SIGTERM from now until ``stop_listening()`` (the whole run)."""
        if not self._outer:
            self._outer = self._swap()

    def stop_listening(self) -> None:
        self._put_back(self._previous)
        self._put_back(self._outer)

    def _take_over(self, trainer) -> None:
        self._trainer = trainer
        if not self._previous:
            self._previous = self._swap()

    def _hand_back(self) -> None:
        self._put_back(self._previous)

    # ---- stages -------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        from prefixlab.engine.prefixed_model import PrefixedModel

        self._trainer = trainer
        for module in pl_module.modules():  # generate() checks it at every decoding step
            if isinstance(module, PrefixedModel):
                module.stopping_criteria = (self.criterion,)

    def on_train_start(self, trainer, pl_module) -> None:
        self._take_over(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._take_over(trainer)

    def on_test_start(self, trainer, pl_module) -> None:
        self._take_over(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        # last.ckpt at the final step: an evaluation interrupted later resumes without training again
        # (not after a fast_dev_run smoke test: Lightning saves no checkpoint there, resume=auto must find none)
        if trainer.global_step > 0 and self._saved_step != trainer.global_step and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.checkpoint_path)
        self._hand_back()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # within fit, training goes on under our handlers
            self._hand_back()

    def on_test_end(self, trainer, pl_module) -> None:
        self._hand_back()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._hand_back()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._previous.clear()  # Lightning has put back what it found: ours, or the original ones

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._saved_step = trainer.global_step

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._saved_step = checkpoint.get("global_step")

    # ---- where a stop happens -------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # only where an optimizer step just ended: a checkpoint mid-accumulation would lose gradients
        if self.received is not None and trainer.global_step != self._step_at_batch_start:
            self.stop(trainer)

    def _stop_evaluating(self, trainer) -> None:
        if self.received is None:
            return
        if trainer.state.fn == TrainerFn.FITTING:  # validation within fit: training is at a step boundary
            self.stop(trainer)
        checkpoint = self.checkpoint_path if self.checkpoint_path.is_file() else None
        raise self.interrupted(self.received, trainer.global_step, checkpoint, _stage(trainer))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._stop_evaluating(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._stop_evaluating(trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._stop_evaluating(trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._stop_evaluating(trainer)

    def stop_if_received(self, trainer: pl.Trainer) -> None:
        """After ``fit``: a signal that came after the last step still stops the run."""
        if self.received is not None:
            self.stop(trainer)

    def stop(self, trainer: pl.Trainer) -> None:
        if self._saved_step != trainer.global_step:
            trainer.save_checkpoint(self.checkpoint_path)
        raise RunInterrupted(self.received, trainer.global_step, self.checkpoint_path, _stage(trainer))


def _stage(trainer) -> str:
    """What the trainer was doing, in words (a packed sweep passes a stand-in without a state)."""
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    if fn == TrainerFn.FITTING and getattr(trainer, "validating", False):
        return "validation"
    return {TrainerFn.VALIDATING: "validation", TrainerFn.TESTING: "test"}.get(fn, "training")


class LastGoodState(pl.Callback):
    """A copy of the trainable parameters as they were before the latest optimizer step.

    ``on_before_optimizer_step`` runs after the loss and its gradients were computed and before
    the update, and ``training_step`` has raised already if the loss was not finite: so the
    copy is the last state known to give a finite loss. Costs one copy of the trainable
    parameters (small for prefixes; a full fine-tune doubles its weight memory).
    """

    def __init__(self) -> None:
        self.step: int | None = None
        self._copies: list[torch.Tensor] | None = None

    @staticmethod
    def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for p in module.parameters() if p.requires_grad]

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = self._trainable(pl_module)
        if self._copies is None:
            self._copies = [p.detach().clone() for p in params]
        else:
            for copy, p in zip(self._copies, params, strict=True):
                copy.copy_(p)
        self.step = trainer.global_step

    @torch.no_grad()
    def restore(self, module: torch.nn.Module) -> bool:
        """Put the last good parameters back into ``module``; False if there are none or they are not finite."""
        if self._copies is None or not all(torch.isfinite(c).all() for c in self._copies):
            return False
        for p, copy in zip(self._trainable(module), self._copies, strict=True):
            p.copy_(copy)
        return True


def checkpoint_step(path: Path) -> int | None:
    """The global step a checkpoint holds (memory-mapped: no tensor is read), or None without a readable one."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:  # missing, truncated or foreign: the caller reports "no checkpoint"
        return None


def _resource_failure(error: BaseException, step: int, stage: str) -> str | None:
    """One line for running out of memory or disk, saying what to change; None for other errors."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return (f"out of memory at step {step} during {stage}: lower task.batch_size (raise trainer.accumulate_grad_batches "
                f"to keep the effective batch), task.eval_batch_size, task.max_source_tokens or generation.num_beams")
    # torch.save reports a full disk as a RuntimeError ("PytorchStreamWriter failed writing file ...: file write failed")
    disk_full = (isinstance(error, OSError) and error.errno == errno.ENOSPC) or (
        isinstance(error, RuntimeError) and "file write failed" in str(error))
    if disk_full:
        where = f" writing {error.filename}" if getattr(error, "filename", None) else ""
        return (f"no space left on device{where} at step {step} during {stage}: free disk space (or choose another "
                f"hydra.run.dir) and continue with resume=auto")
    return None


def record_failure(error: BaseException, run_dir: Path, module, trainer, last_good: LastGoodState | None,
                   summary: dict, started: float, evaluation_only: bool = False) -> BaseException:
    """Write what happened to ``metrics.json``; for a non-finite loss also export the last good
    prefix. Returns the exception the entry point should raise. evaluation_only (``prefixlab-eval``):
    no step or checkpoint is recorded (it trains none), and a signal is an ``EvaluationInterrupted``."""
    from prefixlab.training.resume import LAST_CHECKPOINT

    run_dir = Path(run_dir)
    step = trainer.global_step if trainer is not None else 0
    checkpoint = run_dir / LAST_CHECKPOINT
    saved_step = checkpoint_step(checkpoint) if checkpoint.is_file() else None
    metrics = {**summary} if evaluation_only else {
        **summary, "step": step, "checkpoint": str(checkpoint) if saved_step is not None else None,
        "last_checkpoint_step": saved_step}
    kept = f"checkpoint {checkpoint} (step {saved_step}) kept" if saved_step is not None else "no checkpoint was written yet"
    result: BaseException = error
    if isinstance(error, RunInterrupted):
        metrics.update(status="interrupted", signal=signal.Signals(error.signum).name, interrupted_during=error.during,
                       **({"stopped_at_once": True} if error.at_once else {}))
    elif isinstance(error, (KeyboardInterrupt, SystemExit)):
        # a signal outside the training steps: Lightning raises SIGTERMException (a SystemExit
        # without exit code, which would exit 0) or turns Ctrl-C into sys.exit(1)
        signum = signal.SIGTERM if type(error).__name__ == "SIGTERMException" else signal.SIGINT
        metrics.update(status="interrupted", signal=signal.Signals(signum).name)
        result = (EvaluationInterrupted if evaluation_only else RunInterrupted)(
            signum, step, checkpoint if saved_step is not None else None, _stage(trainer))
    else:
        metrics.update(status="failed", error=f"{type(error).__name__}: {error}")
        resource = _resource_failure(error, step, _stage(trainer))
        if resource:
            result = RunFailed(f"{resource}; {kept}; status in {run_dir / 'metrics.json'}")
    from prefixlab.run.runs import is_global_zero

    writes = is_global_zero(trainer)  # the other ranks of a multi-process run only pass the error on
    if isinstance(error, FloatingPointError):
        export_dir = run_dir / ("prefix" if module.is_prefix_method else "trained")
        exported = None
        if writes and last_good is not None and last_good.restore(module):
            module.export(export_dir)
            exported = f"last good state (after {last_good.step} steps) exported to {export_dir}"
            metrics.update(exported=str(export_dir), exported_step=last_good.step)
        result = RunFailed(f"{error}; {exported or 'nothing exported (no finite step)'}; {kept}; "
                           f"status in {run_dir / 'metrics.json'}")
    metrics["runtime_s"] = round(time.time() - started, 1)
    try:
        if writes:
            write_results(run_dir, metrics, None)
    except OSError as write_error:  # the original error matters more: say it in the same line
        note = f"{run_dir / 'metrics.json'} could not be written ({write_error}) and may describe an earlier run"
        if isinstance(result, RunFailed):
            result = RunFailed(f"{result}; {note}")
        else:
            print(f"could not write status: {note}", file=sys.stderr)
    return result


def record_input_error(error: BaseException, run_dir: Path) -> None:
    """A bad input found before training: ``status: failed`` in metrics.json if the run directory takes it."""
    try:
        write_results(Path(run_dir), {"status": "failed", "error": f"{type(error).__name__}: {error}", "step": 0}, None)
    except OSError:
        pass  # the run directory itself may be what is wrong
