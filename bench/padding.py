"""How much of a packed step is padding: a job's own batches vs a packed step's forwards.

A batch is padded to its longest row. For each task, 300 random steps: a single job's batch
of 8 rows; K jobs' rows concatenated in one forward (what packed sweeps did first); and K
jobs' rows sorted by length and cut into forwards of 8 (what they do on a CPU now). The
figure is padded tokens / real tokens (1.00 = no padding). Tokenized as training sees them
(prompt + target, the task's truncation), SmolLM2's tokenizer.

    PREFIXLAB_DATA=../shared/data python bench/padding.py [bbc_headline e2e dart] [--out bench/padding.md]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from prefixlab.config import register_configs
from prefixlab.training.resume import ResumableDataModule
from prefixlab.cli.train import CONFIG_DIR

from bench import shared_data_folder  # bench/bench.py: run as python bench/padding.py, bench/ is on the path

LOCAL = {"e2e", "dart"}  # read from $PREFIXLAB_DATA/<task>, the shared development sets


def lengths(task: str) -> tuple[list[int], int]:
    overrides = [f"task={task}"]
    if task in LOCAL:
        overrides.append(f"task.data_dir={shared_data_folder(task)}")
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        settings = OmegaConf.to_object(compose(config_name="train", overrides=overrides))
    datamodule = ResumableDataModule.for_run(settings, False)
    datamodule.setup("fit")
    return [len(e.prompt_ids) + len(e.target_ids) for e in datamodule.splits["train"]], settings.task.batch_size


def padded_over_real(rows: list[int], rows_per_forward: int) -> tuple[int, int]:
    padded = sum(max(rows[i : i + rows_per_forward]) * len(rows[i : i + rows_per_forward])
                 for i in range(0, len(rows), rows_per_forward))
    return padded, sum(rows)


def factors(all_lengths: list[int], batch: int, k: int, steps: int = 300, seed: int = 0) -> dict:
    generator = random.Random(seed)
    totals = {"own batch": [0, 0], "one forward": [0, 0], "sorted forwards": [0, 0]}
    for _ in range(steps):
        rows = generator.sample(all_lengths, k * batch)
        for name, (padded, real) in (("own batch", padded_over_real(rows[:batch], batch)),
                                     ("one forward", padded_over_real(rows, k * batch)),
                                     ("sorted forwards", padded_over_real(sorted(rows), batch))):
            totals[name][0] += padded
            totals[name][1] += real
    return {name: padded / real for name, (padded, real) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="*", default=["bbc_headline", "e2e", "dart"])
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    lines = ["| task | rows (train) | tokens per row, mean (min-max) | one job's batch of 8 | K = 4, one forward | "
             "K = 4, sorted forwards of 8 | K = 8, one forward | K = 8, sorted forwards of 8 |",
             "|---|---|---|---|---|---|---|---|"]
    for task in args.tasks:
        all_lengths, batch = lengths(task)
        four, eight = factors(all_lengths, batch, 4), factors(all_lengths, batch, 8)
        lines.append(f"| {task} | {len(all_lengths)} | {sum(all_lengths) / len(all_lengths):.0f} ({min(all_lengths)}-"
                     f"{max(all_lengths)}) | {four['own batch']:.3f} | {four['one forward']:.3f} | "
                     f"{four['sorted forwards']:.3f} | {eight['one forward']:.3f} | {eight['sorted forwards']:.3f} |")
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
