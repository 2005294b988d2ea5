"""What a pack shows while it trains: the step, the time left, and every job's latest loss.

With ``trainer.enable_progress_bar=true`` (the default) the step bar of single runs
(``run/progress.StepProgressBar``) counts the pack's steps with its ETA, and
``PackedPrefixModule`` puts each job's latest loss beside it (``loss/<job>``). Without the bar (batch jobs, logs) ``PackProgress`` prints a line at the first
step, every ``trainer.log_every_n_steps`` steps and the last, so a short pack is not silent:

    packed step 4/6, 0.31 s/step, ETA 0:00:01: 0=2.3101 1=2.4100 (done) 2=failed

Both read what the step already computed (the losses in each job's ``log``): no extra work on
the device, one line of text per ``log_every_n_steps`` steps.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl


def job_label(j) -> str:
    """A job as the progress shows it: its run directory's name (the job number in a sweep)."""
    return j.job.run_dir.name


def steps_left(jobs: list) -> int:
    """Packed steps until the longest job still training is done (finished and failed jobs need none)."""
    return max((j.max_steps - j.step for j in jobs if j.training), default=0)


def progress_line(jobs: list, step: int, seconds_per_step: float) -> str:
    """``packed step <step>/<last>, <s>/step, ETA <h:mm:ss>: <job>=<latest loss> ...``; a job whose
    steps are done says ``(done)``, one that diverged ``failed``."""
    left = steps_left(jobs)
    eta = round(left * seconds_per_step)
    losses = []
    for j in jobs:
        if j.error is not None:
            losses.append(f"{job_label(j)}=failed")
        elif j.log:
            losses.append(f"{job_label(j)}={j.log[-1][1]['train/loss']:.4f}" + ("" if j.training else " (done)"))
    return (f"packed step {step}/{step + left}, {seconds_per_step:.2f} s/step, "
            f"ETA {eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}: " + " ".join(losses))


class PackProgress(pl.Callback):
    """Prints ``progress_line`` after the first step of this fit, every ``every`` steps and the
    last (the pack's Trainer has it when Lightning's progress bar is off). The time per step is
    the mean over this fit's steps (a resumed pack counts from its resumption)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.started, self.first_step = 0.0, 0

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        self.started, self.first_step = time.monotonic(), trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step, done = trainer.global_step, trainer.global_step - self.first_step
        if done == 1 or step % self.every == 0 or steps_left(pl_module.jobs) == 0:
            print(progress_line(pl_module.jobs, step, (time.monotonic() - self.started) / max(1, done)), flush=True)
