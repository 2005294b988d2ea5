"""One training step and one evaluation batch of every experiment at ``scale=paper``, on a GPU.

Each experiment's methods (its sweep's first grid point otherwise) are composed exactly as
``prefixlab-train experiment=<name> scale=paper <method>`` composes them; the run's own checks
(``preflight``), data module and LightningModule are built as ``prefixlab-train`` builds them. Then,
outside the Lightning Trainer: three optimizer steps on the paper's batch (the first a warm-up), timed,
with the trainer's precision (bf16-mixed on a GPU) and gradient clipping, and one evaluation batch
generated with the paper's decoding (beam 5, up to 64 new tokens for table-to-text). Reported per
configuration: the model's and the trainable parameter counts, seconds per step, the peak GPU
memory, the run's step count and the hours of training that make, and the evaluation batch's time.

What it checks: that every paper configuration builds, fits and steps on one GPU, and what a full
run would cost. What it does not: scores (METEOR needs Java and pycocoevalcap's 100 MB jar, so the
table-to-text tasks' METEOR check is switched off here, and nothing is scored).

    python bench/paper_step.py --model-dir /path/gpt2-medium [--random-init] \\
        --data e2e=/path/e2e --data dart=/path/dart [--out bench] [--only e2e_main_table]

``--model-dir`` replaces the hub's ``openai-community/gpt2-medium`` (a local copy of it); with
``--random-init`` its config and tokenizer alone are used and the weights are random (same shapes,
so the same time and memory per step; the generated text is noise and runs to the token limit).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# (experiment, overrides): every experiment's first method (or its grid's first point) first, so that a
# time budget that runs out still leaves one row per experiment; then the other methods
_METHODS = {
    "e2e_main_table": ["prefix", "finetune", "finetune_topk", "adapter_3pct", "adapter_0p1pct"],
    "low_data": ["prefix", "finetune"],
    "embedding_infix_prefix": ["prefix", "embedding", "infix"],
    "initialization": [],
    "reparameterization": ["prefix", "prefix_flat"],
    "prefix_length": [],
    "extrapolation": ["prefix", "finetune"],
}
_OTHERS = {"initialization": [["experiment/initialization/arm=table_to_text"]]}
CONFIGURATIONS = [
    *[(name, [f"method={methods[0]}"] if methods else []) for name, methods in _METHODS.items()],
    *[(name, [f"method={m}"]) for name, methods in _METHODS.items() for m in methods[1:]],
    *[(name, overrides) for name, others in _OTHERS.items() for overrides in others],
]
TASK_DATA = {"e2e": "e2e", "dart": "dart"}  # tasks read from --data; the BBC task is embedded


def compose(experiment: str, overrides: list[str], model_dir: str | None, random_init: bool, data: dict[str, str], device: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from prefixlab.config import register_configs

    register_configs()
    import prefixlab.cli.train  # noqa: F401  (registers the ${pid:} resolver)

    extra = [*([f"model.name_or_path={model_dir}"] if model_dir else []), *(["model.random_init=true"] if random_init else []),
             *(["trainer=cpu"] if device == "cpu" else [])]  # --device cpu: a trial of this script without a GPU
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = hydra_compose("train", overrides=[f"experiment={experiment}", "scale=paper", *overrides, *extra])
        task = cfg.task.name
        if task in TASK_DATA and TASK_DATA[task] in data:
            cfg = hydra_compose("train", overrides=[f"experiment={experiment}", "scale=paper", *overrides, *extra,
                                                    f"task.data_dir={data[TASK_DATA[task]]}"])
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra", None)
    return cfg


def one(experiment: str, overrides: list[str], args, data: dict[str, str], work: Path) -> dict:
    import prefixlab.tasks.table_to_text as table_to_text
    from prefixlab.cli.train import build_data_and_module, preflight

    table_to_text.check_metrics = lambda task: None  # nothing is scored here (see the module's docstring)
    cfg = compose(experiment, overrides, args.model_dir, args.random_init, data, args.device)
    run_dir = work / f"{experiment}-{len(list(work.iterdir()))}"
    run_dir.mkdir(parents=True)
    plan = preflight(cfg, run_dir)
    settings = plan.settings
    started = time.perf_counter()
    datamodule, module = build_data_and_module(plan)
    device = torch.device(args.device)
    module = module.to(device)
    built_s = time.perf_counter() - started
    optimizers = module.configure_optimizers()
    optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers[0]
    trainable = [p for p in module.parameters() if p.requires_grad]
    bf16 = device.type == "cuda" and settings.trainer.precision.startswith("bf16")
    batch = module.transfer_batch_to_device(next(iter(datamodule.train_dataloader())), device, 0)
    module.train()

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.compute_loss(batch)
        loss.backward()
        if settings.trainer.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(trainable, settings.trainer.gradient_clip_val)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for _ in range(args.steps):
        begun = time.perf_counter()
        losses.append(step())
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begun)
    step_s = min(times[1:]) if len(times) > 1 else times[0]
    eval_batch = module.transfer_batch_to_device(next(iter(datamodule.val_dataloader())), device, 0)
    module.eval()
    begun = time.perf_counter()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        texts = module.generate_text(eval_batch["prompt_ids"][: args.eval_rows], eval_batch["prompt_mask"][: args.eval_rows])
    if device.type == "cuda":
        torch.cuda.synchronize()
    generate_s = time.perf_counter() - begun
    counts = module.parameter_counts()
    gen = settings.generation
    row = {
        "experiment": experiment, "overrides": " ".join(overrides) or "(its defaults)", "task": settings.task.name,
        "method": settings.method.name, "model": cfg.model.name_or_path, "lm_params": counts.get("lm_params"),
        "trainable_params": counts.get("trainable_params"), "batch": int(batch["input_ids"].shape[0]),
        "seq": int(batch["input_ids"].shape[1]), "lr": settings.optim.lr, "precision": settings.trainer.precision if bf16 else "32-true",
        "losses": [round(x, 3) for x in losses], "step_s": step_s,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "max_steps": settings.trainer.max_steps, "train_hours": settings.trainer.max_steps * step_s / 3600,
        "eval_rows": len(texts), "beams": gen.num_beams, "max_new_tokens": gen.max_new_tokens, "generate_s": generate_s,
        "build_s": built_s,
    }
    del module, optimizer, datamodule
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def table(rows: list[dict], failures: list[str], args) -> list[str]:
    lines = [
        "| experiment | overrides | task | method | trainable / LM params | batch x tokens | step (s) | peak GPU memory (GiB) "
        "| the run's steps: training hours | eval batch: rows, beams, new tokens: seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        lines.append(
            f"| {r['experiment']} | {r['overrides']} | {r['task']} | {r['method']} | {r['trainable_params'] / 1e6:.2f}M / "
            f"{r['lm_params'] / 1e6:.0f}M | {r['batch']} x {r['seq']} | {r['step_s']:.3f} | {peak} | {r['max_steps']:,}: "
            f"{r['train_hours']:.2f} h | {r['eval_rows']}, {r['beams']}, <= {r['max_new_tokens']}: {r['generate_s']:.1f} |"
        )
    lines += [f"- failed: {f}" for f in failures]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=None, help="a local GPT-2 medium folder (default: the hub's)")
    parser.add_argument("--random-init", action="store_true", help="random weights of the model's shapes (its config and tokenizer only)")
    parser.add_argument("--data", action="append", default=[], help="TASK=FOLDER, e.g. e2e=/data/e2e (the released files)")
    parser.add_argument("--only", action="append", default=None, help="an experiment (repeatable)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps, the first a warm-up")
    parser.add_argument("--eval-rows", type=int, default=16, help="rows of the evaluation batch to generate")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no configuration after this many seconds")
    parser.add_argument("--out", default="bench")
    args = parser.parse_args()
    data = dict(item.split("=", 1) for item in args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"paper-step-{os.getpid()}"
    work.mkdir(parents=True)
    started, rows, failures = time.time(), [], []
    for experiment, overrides in CONFIGURATIONS:
        if args.only and experiment not in args.only:
            continue
        if time.time() - started > args.budget_s:
            failures.append(f"{experiment} {' '.join(overrides)}: not run (--budget-s {args.budget_s:.0f} spent)")
            continue
        try:
            rows.append(one(experiment, overrides, args, data, work))
            print(json.dumps(rows[-1]), flush=True)
        except Exception as error:  # noqa: BLE001 (one configuration's failure is a finding, not the end)
            failures.append(f"{experiment} {' '.join(overrides)}: {type(error).__name__}: {str(error)[:300]}")
            print("FAILED", failures[-1], flush=True)
        (out / "paper_step.json").write_text(json.dumps({"rows": rows, "failures": failures}, indent=2))
    lines = [f"One training step of every experiment at scale=paper ({time.strftime('%Y-%m-%d')}, {args.device}, "
             f"torch {torch.__version__}{', ' + torch.cuda.get_device_name() if args.device == 'cuda' else ''}; "
             f"model {args.model_dir or 'from the hub'}{', random weights of its shapes' if args.random_init else ''}; "
             f"{time.time() - started:.0f} s in all):", "", *table(rows, failures, args)]
    (out / "paper_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
