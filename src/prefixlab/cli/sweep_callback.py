"""The Hydra callback that ends every ``-m`` run with its summary (``prefixlab.sweeps.summary``),
registered under ``hydra.callbacks.sweep_summary`` in ``conf/train.yaml`` and ``conf/eval.yaml``.

``on_multirun_end`` runs in the process that started the sweep, after the launcher has returned
(basic, joblib, packed, submitit alike), so it reads what the jobs left in their folders. With
``sweep.fail_on_error=true`` a sweep with a job that did not complete exits with code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class SweepSummaryCallback(Callback):
    def __init__(self, app: str = "prefixlab-train") -> None:
        self.app = app

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from prefixlab.sweeps.summary import summarize

        summary = summarize(Path(str(config.hydra.sweep.dir)))
        # stdout when every job completed; stderr when there is something to look at (as errors are)
        print("\n".join(summary.lines), file=sys.stdout if summary.all_completed else sys.stderr, flush=True)
        if summary.not_completed and OmegaConf.select(config, "sweep.fail_on_error", default=False):
            sys.exit(f"{self.app}: error: {summary.not_completed} of {summary.jobs} sweep jobs did not complete "
                     "(sweep.fail_on_error=true)")
