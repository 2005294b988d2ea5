"""The Hydra callback that ends every ``-m`` run with its summary (``prefixlab.sweeps.summary``),
registered under ``hydra.callbacks.sweep_summary`` in ``conf/train.yaml`` and ``conf/eval.yaml``.

``on_multirun_end`` runs in the process that started the sweep, after the launcher has returned
(basic, joblib, packed, submitit alike), so it reads what the jobs left in their folders; a
sweep a signal stopped gets the same summary from the entry point (``print_summary_if_cut_short``).
With ``sweep.fail_on_error=true`` a sweep with a job that did not complete exits with code 1.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


# The sweep under way in this process: Hydra calls no callback when a sweep is cut short (a job's
# or the launcher's sys.exit on SIGINT / SIGTERM), so the entry point prints its summary then.
_running: Path | None = None


def print_summary_if_cut_short(exit_code: Any) -> None:
    """After ``SystemExit(exit_code)`` left Hydra: the summary of a sweep a signal stopped (exit
    code 128 + SIGINT / SIGTERM); nothing for a single run, a finished sweep or another exit."""
    global _running
    sweep_dir, _running = _running, None
    if sweep_dir is None or exit_code not in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        return
    from prefixlab.sweeps.summary import summarize

    print("\n".join(summarize(sweep_dir).lines), file=sys.stderr, flush=True)


class SweepSummaryCallback(Callback):
    def __init__(self, app: str = "prefixlab-train") -> None:
        self.app = app

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _running
        _running = Path(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from prefixlab.sweeps.summary import summarize

        global _running
        _running = None
        summary = summarize(Path(str(config.hydra.sweep.dir)))
        # stdout when every job completed; stderr when there is something to look at (as errors are)
        print("\n".join(summary.lines), file=sys.stdout if summary.all_completed else sys.stderr, flush=True)
        if summary.not_completed and OmegaConf.select(config, "sweep.fail_on_error", default=False):
            sys.exit(f"{self.app}: error: {summary.not_completed} of {summary.jobs} sweep jobs did not complete "
                     "(sweep.fail_on_error=true)")
