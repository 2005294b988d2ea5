"""`make bench`: training-step time and peak memory, generation speed, mixed-prefix batches.

One command runs everything side by side on the embedded SmolLM2-135M-Instruct with the
same batch; each training method runs in a fresh child process so that its memory is its
own. Memory is the method's peak over its steps above the process with the frozen model
loaded: on CPU the resident memory sampled every 2 ms (optimizer state and gradients
included), on CUDA torch.cuda.max_memory_allocated. Figures go to bench/results.md and
bench/results.json.

    python bench/bench.py [--batch 8] [--seq 180] [--repeats 3] [--out bench]
    python bench/bench.py --only packed --packed-k 4,8 --packed-steps 10   # the packed-sweep section alone

Packed sweeps: wall time of a K-job sweep through the real CLI, jobs one after another (the
basic launcher) vs launcher=packed, each command in its own process, model loading included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import threading
import time
from pathlib import Path

import psutil
import torch

from prefixlab.engine.mixing import stack_prefixes
from prefixlab.engine.parameterization import FlatPrefix, MLPPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM
from prefixlab.training.model_loading import SMOLLM2, load_lm


class PeakMemory:
    """Peak bytes a block allocates: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: str) -> None:
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.running = True
        self.samples = [self.base]

        def sample():
            while self.running:
                self.samples.append(self.process.memory_info().rss)
                time.sleep(0.002)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.samples) - self.base


def timed(step, repeats: int, device: str) -> tuple[float, float]:
    """Median seconds and median peak extra bytes of ``step()`` after one warm-up call."""
    step()
    times, peaks = [], []
    for _ in range(repeats):
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peaks.append(memory.peak)
    return statistics.median(times), statistics.median(peaks)


def batch(batch_size: int, seq: int, target: int, device: str):
    torch.manual_seed(0)
    ids = torch.randint(20, 40000, (batch_size, seq), device=device)
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    labels[:, -target:] = ids[:, -target:]
    return ids, mask, labels


TRAINING_METHODS = ("prefix", "prefix_full_vocab", "peft_prefix", "finetune")
TRAINING_NAMES = {
    "prefix": "prefixlab prefix (MLP)",
    "prefix_full_vocab": "prefixlab prefix (MLP), full-vocabulary loss",
    "peft_prefix": "PEFT prefix tuning (MLP)",
    "finetune": "full fine-tuning",
}


def training_benchmark(method: str, args, device) -> dict:
    """One method's median step time and peak memory above the loaded frozen model."""
    lm = load_lm(SMOLLM2).to(device).eval()
    ids, mask, labels = batch(args.batch, args.seq, 16, device)
    baseline = PeakMemory(device)
    with baseline:
        pass  # records the memory of the process with the model loaded
    if method in ("prefix", "prefix_full_vocab"):
        lm.requires_grad_(False)
        model = PrefixedCausalLM(lm)
        model.prefix_encoder = MLPPrefix(model.geometry, 10, lm.config.hidden_size, 512).to(device)
        params = list(model.prefix_encoder.parameters())
        if method == "prefix":
            loss_fn = lambda: model.target_loss(ids, mask, labels)  # noqa: E731  (what prefixlab trains with)
        else:
            loss_fn = lambda: model(ids, mask, labels=labels).loss  # noqa: E731
    elif method == "peft_prefix":
        from peft import PrefixTuningConfig, get_peft_model

        model = get_peft_model(
            lm, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10, prefix_projection=True, encoder_hidden_size=512)
        )
        params = [p for p in model.parameters() if p.requires_grad]
        loss_fn = lambda: model(input_ids=ids, attention_mask=mask, labels=labels).loss  # noqa: E731
    else:
        lm.requires_grad_(True)
        model = PrefixedCausalLM(lm)
        params = list(lm.parameters())
        loss_fn = lambda: model.target_loss(ids, mask, labels, prefix=None)  # noqa: E731
    optimizer = torch.optim.AdamW(params, lr=5e-5)

    def step():
        loss_fn().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    peak_tracker = PeakMemory(device)
    times = []
    with peak_tracker:
        for i in range(args.repeats + 1):
            t = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            if i:  # the first step warms up
                times.append(time.perf_counter() - t)
    # the tracker measured above the start of the steps; report above the loaded model instead
    peak = peak_tracker.peak + peak_tracker.base - baseline.base
    return {"method": TRAINING_NAMES[method], "step_s": statistics.median(times), "peak_mb": peak / 2**20}


def training_benchmarks(args, device) -> list[dict]:
    """Each method in a fresh child process (its memory is then its own)."""
    import sys

    rows = []
    for method in TRAINING_METHODS:
        command = [sys.executable, __file__, "--child-training", method, "--batch", str(args.batch), "--seq", str(args.seq),
                   "--repeats", str(args.repeats)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


def generation_benchmarks(lm, args, device) -> dict:
    lm.requires_grad_(False)
    model = PrefixedCausalLM(lm)
    prefix = MLPPrefix(model.geometry, 10, lm.config.hidden_size, 512).to(device)().detached()
    ids, mask, _ = batch(args.batch, args.prompt, 1, device)
    new = args.new_tokens
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    results = {}
    for name, p in (("without prefix", None), ("with prefix", prefix)):
        seconds, _ = timed(lambda: model.generate(ids, mask, prefix=p, **kwargs), args.repeats, device)
        results[name] = args.batch * new / seconds

    # mixed batches: K different prefixes (lengths 5..20) in one batch vs K single-prefix groups run in turn
    mixed = {}
    total = args.mixed_batch
    mixed_ids, mixed_mask, _ = batch(total, args.prompt, 1, device)
    for k in (1, 4, 16):
        torch.manual_seed(k)
        prefixes = [FlatPrefix(model.geometry, 5 + (i * 5) % 20).to(device)().detached() for i in range(k)]
        assignment = [prefixes[i % k] for i in range(total)]
        stacked = stack_prefixes(assignment)
        one_batch, _ = timed(lambda: model.generate(mixed_ids, mixed_mask, prefix=stacked, **kwargs), args.repeats, device)
        groups = [[i for i in range(total) if i % k == g] for g in range(k)]

        def in_turn():
            for g, rows in enumerate(groups):
                model.generate(mixed_ids[rows], mixed_mask[rows], prefix=prefixes[g], **kwargs)

        separate, _ = timed(in_turn, args.repeats, device)
        single, _ = timed(lambda: model.generate(mixed_ids, mixed_mask, prefix=prefixes[0], **kwargs), args.repeats, device)
        mixed[k] = {
            "mixed_tokens_per_s": total * new / one_batch,
            "single_prefix_tokens_per_s": total * new / single,
            "groups_in_turn_tokens_per_s": total * new / separate,
        }
    model.injector.detach()
    return {"tokens_per_s": results, "mixed": mixed}


# ---- packed sweeps ------------------------------------------------------------------------
def packed_sweep(k: int) -> list[str]:
    """K (at most 8) jobs of one sweep over prefix length x learning rate, as a user would launch them."""
    lengths, lrs = ["5", "10", "15", "20"], ["5e-4", "1e-3"]
    overrides = [f"method.prefix_length={','.join(lengths[:min(k, 4)])}"]
    if k > 4:
        overrides.append(f"optim.lr={','.join(lrs[:k // 4])}")
    return overrides


def packed_task_overrides(task: str) -> list[str]:
    """bbc_headline: the embedded default (every article truncated to 128 tokens, so rows have
    nearly equal lengths). e2e: the paper's table-to-text task, whose MRs differ in length, from
    the E2E development set in $PREFIXLAB_DATA/e2e (or ../shared/data/e2e)."""
    if task == "bbc_headline":
        return []
    return [f"task={task}", f"task.data_dir={shared_data_folder(task)}", "generation.max_new_tokens=48"]


def shared_data_folder(task: str) -> Path:
    """$PREFIXLAB_DATA/<task>, else ../shared/data/<task> beside the repository (as conf/scale/parts/*_small.yaml
    resolve it), or one clear exit if it is missing."""
    folder = Path(os.environ.get("PREFIXLAB_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")) / task
    if not folder.is_dir():
        raise SystemExit(f"bench: task {task} reads {folder}, which does not exist; set PREFIXLAB_DATA to the folder "
                         f"that holds {task}/")
    return folder.resolve()


def packed_benchmarks(args) -> list[dict]:
    """Wall time of ``prefixlab-train -m <K jobs>`` with the basic launcher (the jobs one after
    another, each loading the model and its data) and with ``launcher=packed``, from the command
    to its exit: Python and Hydra start-up, model loading, training, evaluation, export. Both on
    the embedded SmolLM2 and the BBC task, with few steps and small evaluation sets so that the
    training share stays near a real sweep's at this size."""
    import sys
    import tempfile

    common = [*packed_task_overrides(args.packed_task),
        f"trainer.max_steps={args.packed_steps}", f"task.batch_size={args.batch}", f"task.val_size={args.packed_eval}",
        f"task.test_size={args.packed_eval}", "eval_zero_shot=false", "trainer.enable_progress_bar=false",
        # on a GPU machine the jobs train there (conf/trainer/gpu.yaml: bf16-mixed), as a user's sweep would
        *(["trainer=gpu"] if torch.cuda.is_available() else []),
    ]
    rows = []
    for k in args.packed_k:
        row = {"k": k, "steps": args.packed_steps}
        for name, extra in (("sequential_s", []), ("packed_s", ["launcher=packed"])):
            with tempfile.TemporaryDirectory(prefix="bench-packed-") as cwd:
                command = [sys.executable, "-m", "prefixlab.cli.train", "-m", *common, *packed_sweep(k), *extra]
                started = time.perf_counter()
                result = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                                        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"})
                row[name] = time.perf_counter() - started
                print(f"K={k} {name}: {row[name]:.0f} s", flush=True)
                if result.returncode != 0:
                    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
                done = [json.loads(m.read_text()) for m in Path(cwd).glob("multirun/*/*/*/metrics.json")]
                if len(done) != k or any(m["status"] != "completed" for m in done):
                    raise RuntimeError(f"{name}: expected {k} completed jobs, got {[m.get('status') for m in done]}")
        row["speedup"] = row["sequential_s"] / row["packed_s"]
        rows.append(row)
        print(row, flush=True)
    return rows


def packed_lines(rows: list[dict], args) -> list[str]:
    if not rows:
        return ["Packed sweeps: not run yet (the section runs last)."]
    lines = [
        f"Packed sweeps (`prefixlab-train -m ... launcher=packed`), task {args.packed_task}: K jobs (prefix length x lr), "
        f"{rows[0]['steps']} steps of batch {args.batch} each, validation and test on {args.packed_eval} examples each; "
        "wall time of the whole command "
        "(start-up, model loading, data, training, evaluation, export):",
        "",
        "| K | jobs one after another (s) | packed (s) | speed-up |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['k']} | {r['sequential_s']:.0f} | {r['packed_s']:.0f} | {r['speedup']:.2f}x |" for r in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=180, help="training sequence length (the BBC default's mean)")
    parser.add_argument("--prompt", type=int, default=160, help="prompt length for generation")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--mixed-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench")
    parser.add_argument("--packed-k", type=lambda v: [int(k) for k in v.split(",")], default=[4, 8],
                        help="packed sweeps: numbers of jobs, e.g. 4,8")
    parser.add_argument("--packed-steps", type=int, default=10, help="packed sweeps: training steps per job")
    parser.add_argument("--packed-eval", type=int, default=8, help="packed sweeps: validation and test articles per job")
    parser.add_argument("--packed-task", choices=["bbc_headline", "e2e"], default="bbc_headline",
                        help="packed sweeps: the task (e2e needs the E2E development set, see packed_task_overrides)")
    parser.add_argument("--only", choices=["packed"], default=None,
                        help="run one section; its table goes to <out>/<section>.md (results.md is left as it is)")
    parser.add_argument("--child-training", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    if args.child_training:
        print(json.dumps(training_benchmark(args.child_training, args, device)))
        return
    started = time.time()
    if args.only == "packed":
        lines = [f"# Packed sweeps ({time.strftime('%Y-%m-%d')}, {device}, {torch.get_num_threads()} threads)", "",
                 *packed_lines(packed_benchmarks(args), args)]
        Path(args.out).mkdir(parents=True, exist_ok=True)
        name = "packed.md" if args.packed_task == "bbc_headline" else f"packed_{args.packed_task}.md"
        (Path(args.out) / name).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    training = training_benchmarks(args, device)
    lm = load_lm(SMOLLM2).to(device).eval()
    generation = generation_benchmarks(lm, args, device)
    del lm  # the packed section's commands load their own
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    environment = {
        "date": time.strftime("%Y-%m-%d"), "commit": commit, "device": device,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "args": vars(args), "wall_s": round(time.time() - started, 1),
    }
    write(Path(args.out), training, generation, environment, [], args)  # kept if the packed section is cut short
    packed = packed_benchmarks(args)
    environment["wall_s"] = round(time.time() - started, 1)
    write(Path(args.out), training, generation, environment, packed, args)


def write(out: Path, training: list[dict], generation: dict, environment: dict, packed: list[dict], args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"environment": environment, "training": training, "generation": generation,
                                                  "packed": packed}, indent=2))
    finetune = next(r for r in training if r["method"] == "full fine-tuning")
    peft = next(r for r in training if r["method"].startswith("PEFT"))
    lines = [
        f"# Benchmark results ({environment['date']}, commit {environment['commit']}, {environment['device']}, "
        f"{environment['threads']} threads, torch {environment['torch']})",
        "",
        f"SmolLM2-135M-Instruct, batch {environment['args']['batch']} x {environment['args']['seq']} tokens, "
        f"median of {environment['args']['repeats']} steps after a warm-up; each method in its own process; memory: peak "
        "above the process with the frozen model loaded (optimizer state and gradients included).",
        "",
        "| training step | seconds | vs full fine-tuning | vs PEFT | peak memory above the loaded model (MB) | vs full fine-tuning |",
        "|---|---|---|---|---|---|",
    ]
    for r in training:
        lines.append(
            f"| {r['method']} | {r['step_s']:.2f} | {r['step_s'] / finetune['step_s']:.2f}x | {r['step_s'] / peft['step_s']:.2f}x "
            f"| {r['peak_mb']:.0f} | {r['peak_mb'] / finetune['peak_mb']:.2f}x |"
        )
    tps = generation["tokens_per_s"]
    lines += [
        "",
        f"Generation (greedy, batch {environment['args']['batch']}, prompt {environment['args']['prompt']} tokens, "
        f"{environment['args']['new_tokens']} new tokens): without prefix {tps['without prefix']:.1f} tokens/s, "
        f"with prefix {tps['with prefix']:.1f} tokens/s ({tps['with prefix'] / tps['without prefix']:.2f}x).",
        "",
        f"Mixed-prefix batches ({environment['args']['mixed_batch']} prompts, K different prefixes of lengths 5-20):",
        "",
        "| K | one mixed batch (tokens/s) | one batch, one prefix (tokens/s) | ratio | K groups in turn (tokens/s) | mixed vs in turn |",
        "|---|---|---|---|---|---|",
    ]
    for k, m in generation["mixed"].items():
        lines.append(
            f"| {k} | {m['mixed_tokens_per_s']:.1f} | {m['single_prefix_tokens_per_s']:.1f} | "
            f"{m['mixed_tokens_per_s'] / m['single_prefix_tokens_per_s']:.2f}x | {m['groups_in_turn_tokens_per_s']:.1f} | "
            f"{m['mixed_tokens_per_s'] / m['groups_in_turn_tokens_per_s']:.2f}x |"
        )
    lines += ["", *packed_lines(packed, args)]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
