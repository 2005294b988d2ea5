"""Runs `prefixlab-train` and marks when evaluation generates, so a test can signal the process
during `generate()`: `python eval_harness.py <validate|test> <marker file> <stubborn: 0|1> <cli args...>`
(`--eval` as the first cli arg: `prefixlab-eval` with the other args instead).

The chosen stage (after training) generates 6000 new tokens per batch (minutes, even on the
tiny model), and at the start of its first batch the harness writes the marker file. With stubborn=1 every decoding call ignores stop requests and runs for 120 s (a stand-in for a
step that cannot be cut short), so only a second signal can end it. Nothing in prefixlab knows
about it."""

import sys
import time
from pathlib import Path

import pytorch_lightning as pl

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/ (last: its folders shadow nothing), for harness_common

from harness_common import add_to_run_trainers, run_prefixlab_eval, run_prefixlab_train  # noqa: E402

stage, marker, stubborn, args = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]


LONG = 6000


class MarkEvaluation(pl.Callback):
    def on_validation_start(self, trainer, pl_module):
        if trainer.state.fn == stage:
            pl_module.hparams.generation["max_new_tokens"] = LONG

    def on_test_start(self, trainer, pl_module):
        if trainer.state.fn == stage:
            pl_module.hparams.generation["max_new_tokens"] = LONG

    def _mark(self, trainer):
        if trainer.state.fn == stage and not marker.exists():
            marker.write_text(str(trainer.global_step))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._mark(trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._mark(trainer)


add_to_run_trainers(MarkEvaluation())
if stubborn:
    from prefixlab.engine.prefixed_lm import PrefixedCausalLM

    def generate(self, input_ids, attention_mask, prefix=None, **kwargs):
        deadline = time.time() + 120
        while time.time() < deadline:  # sleeps are cut short by signals, and their handlers run
            time.sleep(0.05)
        raise AssertionError("nothing stopped the stubborn generate()")

    PrefixedCausalLM.generate = generate
if args[:1] == ["--eval"]:
    run_prefixlab_eval(args[1:])
else:
    run_prefixlab_train(args)
