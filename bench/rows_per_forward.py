"""Which forward size is cheapest per row on this machine: forward and backward of the same 32
rows as one forward of 32, or in forwards of 16, 8 or 4 (``hydra.launcher.rows_per_forward``).

The embedded SmolLM2 with an MLP prefix of length 10, rows of 180 tokens (the BBC default's
length) with the last 15 supervised; each size is timed twice, the second timing is the one
to read (the first pays for memory the process has not mapped yet).

    python bench/rows_per_forward.py [--sizes 32,16,8,4] [--keep-freed-memory]
"""

from __future__ import annotations

import argparse
import time

import torch

from prefixlab.training.cpu_memory import keep_freed_memory
from prefixlab.engine.parameterization import MLPPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM
from prefixlab.training.model_loading import SMOLLM2, load_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[32, 16, 8, 4])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--seq", type=int, default=180)
    parser.add_argument("--keep-freed-memory", action="store_true", help="as packed sweeps on a CPU do")
    args = parser.parse_args()
    if args.keep_freed_memory:
        keep_freed_memory()
    torch.manual_seed(0)
    shared = PrefixedCausalLM(load_lm(SMOLLM2).requires_grad_(False).eval())
    encoder = MLPPrefix(shared.geometry, 10, 576, 512)
    ids = torch.randint(0, shared.lm.config.vocab_size, (args.rows, args.seq))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : args.seq - 15] = -100
    for size in args.sizes:
        times = []
        for _ in range(2):
            started = time.perf_counter()
            for start in range(0, args.rows, size):
                rows = slice(start, start + size)
                shared.target_loss(ids[rows], mask[rows], labels[rows], prefix=encoder()).backward()
            times.append(time.perf_counter() - started)
        print(f"| {size} | {times[0]:.1f} s | {times[1]:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
