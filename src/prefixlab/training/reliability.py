"""What a run does when something goes wrong while it trains.

* SIGINT / SIGTERM (``StopOnSignal``): the current optimizer step finishes, ``last.ckpt`` is
  written, the run stops with ``status: interrupted`` and the step; ``resume=auto`` continues.
  A second signal stops at once.
* A non-finite loss (``module.training_step`` raises FloatingPointError): the run stops with
  ``status: failed``; the last periodic checkpoint stays as it was, and the prefix exported is
  the last one whose loss was finite (``LastGoodState`` keeps a copy of the trainable
  parameters from before each optimizer step).
* Anything else: ``status: failed`` with the error, then the error propagates as before.

``metrics.json`` always says which of these happened (written atomically, like every artifact).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from prefixlab.run.runs import write_results


class RunInterrupted(Exception):
    """Training stopped on a signal (after writing a checkpoint, if it came during training)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint yet"
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; {where} "
                         "(continue with resume=auto and the same hydra.run.dir)")


class RunFailed(RuntimeError):
    """Training failed for a reason the user can act on (a non-finite loss); one line."""


class StopOnSignal(pl.Callback):
    """SIGINT and SIGTERM during training ask for a stop at the next optimizer-step boundary.

    The handlers are installed in ``on_train_start``, after Lightning installed its own
    SIGTERM handler (which would otherwise end the run mid-accumulation without a checkpoint),
    and the previous ones come back when training ends or fails.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint_path: Path) -> None:
        self.checkpoint_path = Path(checkpoint_path)
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._step_at_batch_start = -1

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # asked twice: stop now
            self._restore()
            raise KeyboardInterrupt
        self.received = signum
        print(f"\nreceived {signal.Signals(signum).name}: stopping after the current step "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in self.SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self._install()

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # only where an optimizer step just ended: a checkpoint mid-accumulation would lose gradients
        if self.received is not None and trainer.global_step != self._step_at_batch_start:
            self.stop(trainer)

    def stop_if_received(self, trainer: pl.Trainer) -> None:
        """After ``fit``: a signal that came after the last step still stops the run."""
        if self.received is not None:
            self.stop(trainer)

    def stop(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.checkpoint_path)
        raise RunInterrupted(self.received, trainer.global_step, self.checkpoint_path)


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


def record_failure(error: BaseException, run_dir: Path, module, trainer, last_good: LastGoodState | None,
                   summary: dict, started: float) -> BaseException:
    """Write what happened to ``metrics.json``; for a non-finite loss also export the last good
    prefix. Returns the exception the entry point should raise."""
    from prefixlab.training.resume import LAST_CHECKPOINT

    run_dir = Path(run_dir)
    step = trainer.global_step if trainer is not None else 0
    checkpoint = run_dir / LAST_CHECKPOINT
    metrics = {**summary, "step": step, "checkpoint": str(checkpoint) if checkpoint.is_file() else None}
    result: BaseException = error
    if isinstance(error, RunInterrupted):
        metrics.update(status="interrupted", signal=signal.Signals(error.signum).name)
    elif isinstance(error, (KeyboardInterrupt, SystemExit)):
        # a signal outside the training steps: Lightning raises SIGTERMException (a SystemExit
        # without exit code, which would exit 0) or turns Ctrl-C into sys.exit(1)
        signum = signal.SIGTERM if type(error).__name__ == "SIGTERMException" else signal.SIGINT
        metrics.update(status="interrupted", signal=signal.Signals(signum).name)
        result = RunInterrupted(signum, step, checkpoint if checkpoint.is_file() else None)
    else:
        metrics.update(status="failed", error=f"{type(error).__name__}: {error}")
    from prefixlab.run.runs import is_global_zero

    writes = is_global_zero(trainer)  # the other ranks of a multi-process run only pass the error on
    if isinstance(error, FloatingPointError):
        export_dir = run_dir / ("prefix" if module.is_prefix_method else "trained")
        exported = None
        if writes and last_good is not None and last_good.restore(module):
            module.export(export_dir)
            exported = f"last good state (after {last_good.step} steps) exported to {export_dir}"
            metrics.update(exported=str(export_dir), exported_step=last_good.step)
        kept = f"checkpoint {checkpoint} kept" if checkpoint.is_file() else "no checkpoint was written yet"
        result = RunFailed(f"{error}; {exported or 'nothing exported (no finite step)'}; {kept}; "
                           f"status in {run_dir / 'metrics.json'}")
    metrics["runtime_s"] = round(time.time() - started, 1)
    try:
        if writes:
            write_results(run_dir, metrics, None)
    except OSError as write_error:  # the original error matters more
        print(f"prefixlab-train: could not write {run_dir / 'metrics.json'}: {write_error}", file=sys.stderr)
    return result


def record_input_error(error: BaseException, run_dir: Path) -> None:
    """A bad input found before training: ``status: failed`` in metrics.json if the run directory takes it."""
    try:
        write_results(Path(run_dir), {"status": "failed", "error": f"{type(error).__name__}: {error}", "step": 0}, None)
    except OSError:
        pass  # the run directory itself may be what is wrong
