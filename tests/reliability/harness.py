"""Runs `prefixlab-train` with a pause at a chosen step, so a test can kill or signal the
process at a known point: `python harness.py <pause at global step> <marker file> <cli args...>`.

At the start of the batch after <pause at> optimizer steps (so the checkpoint of that step,
if any, is on disk) it writes the marker file and waits until a stop signal was received
(or 120 s), then carries on (``harness_common.PauseAtStep``). Nothing in prefixlab knows about it."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/ (last: its folders shadow nothing), for harness_common

from harness_common import PauseAtStep, add_to_run_trainers, run_prefixlab_train  # noqa: E402

pause_at, marker, args = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
add_to_run_trainers(PauseAtStep(pause_at, marker))
run_prefixlab_train(args)
