"""`make bench`: training-step time and peak memory, generation speed, mixed-prefix batches.

Everything runs side by side in one process on the embedded SmolLM2-135M-Instruct with the
same batch, and the figures are written to bench/results.md and bench/results.json.
Memory on CPU is the peak resident memory sampled every 2 ms during a step, minus the
resident memory just before it (what the step itself allocates); on CUDA it is
torch.cuda.max_memory_allocated over the step.

    python bench/bench.py [--batch 8] [--seq 180] [--repeats 3] [--out bench]
"""

from __future__ import annotations

import argparse
import copy
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

from prefixlab.engine.injection import PrefixActivations
from prefixlab.engine.mixing import stack_prefixes
from prefixlab.engine.parameterization import FlatPrefix, MLPPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM
from prefixlab.model_loading import SMOLLM2, load_lm


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


def training_benchmarks(lm, args, device) -> list[dict]:
    ids, mask, labels = batch(args.batch, args.seq, 16, device)
    rows = []

    # ours: the MLP prefix as prefixlab trains it (LM head only on target tokens)
    lm.requires_grad_(False)
    ours = PrefixedCausalLM(lm)
    ours.prefix_encoder = MLPPrefix(ours.geometry, 10, lm.config.hidden_size, 512).to(device)
    optimizer = torch.optim.AdamW(ours.prefix_encoder.parameters(), lr=5e-4)

    def ours_step():
        ours.target_loss(ids, mask, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def ours_full_logits_step():
        ours(ids, mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for name, step in (("prefixlab prefix (MLP)", ours_step), ("prefixlab prefix (MLP), full-vocabulary loss", ours_full_logits_step)):
        seconds, peak = timed(step, args.repeats, device)
        rows.append({"method": name, "step_s": seconds, "peak_mb": peak / 2**20})
    ours.injector.detach()

    # PEFT's prefix tuning, same prefix length and MLP width
    from peft import PrefixTuningConfig, get_peft_model

    peft_model = get_peft_model(
        lm, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10, prefix_projection=True, encoder_hidden_size=512)
    )
    peft_optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-4)

    def peft_step():
        peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        peft_optimizer.step()
        peft_optimizer.zero_grad(set_to_none=True)

    seconds, peak = timed(peft_step, args.repeats, device)
    rows.append({"method": "PEFT prefix tuning (MLP)", "step_s": seconds, "peak_mb": peak / 2**20})
    lm = peft_model.get_base_model()  # prefix tuning leaves the base model's modules untouched
    del peft_model, peft_optimizer

    # full fine-tuning: every weight, AdamW
    full = copy.deepcopy(lm).requires_grad_(True)
    full_model = PrefixedCausalLM(full)
    full_optimizer = torch.optim.AdamW(full.parameters(), lr=5e-5)

    def finetune_step():
        full_model.target_loss(ids, mask, labels, prefix=None).backward()
        full_optimizer.step()
        full_optimizer.zero_grad(set_to_none=True)

    seconds, peak = timed(finetune_step, args.repeats, device)
    rows.append({"method": "full fine-tuning", "step_s": seconds, "peak_mb": peak / 2**20})
    del full, full_model, full_optimizer
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=180, help="training sequence length (the BBC default's mean)")
    parser.add_argument("--prompt", type=int, default=160, help="prompt length for generation")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--mixed-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    lm = load_lm(SMOLLM2).to(device).eval()
    started = time.time()
    training = training_benchmarks(lm, args, device)
    lm = load_lm(SMOLLM2).to(device).eval()  # fresh: the fine-tuning copy and PEFT are gone
    generation = generation_benchmarks(lm, args, device)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    environment = {
        "date": time.strftime("%Y-%m-%d"), "commit": commit, "device": device,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "args": vars(args), "wall_s": round(time.time() - started, 1),
    }
    write(Path(args.out), training, generation, environment)


def write(out: Path, training: list[dict], generation: dict, environment: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"environment": environment, "training": training, "generation": generation}, indent=2))
    finetune = next(r for r in training if r["method"] == "full fine-tuning")
    peft = next(r for r in training if r["method"].startswith("PEFT"))
    lines = [
        f"# Benchmark results ({environment['date']}, commit {environment['commit']}, {environment['device']}, "
        f"{environment['threads']} threads, torch {environment['torch']})",
        "",
        f"SmolLM2-135M-Instruct, batch {environment['args']['batch']} x {environment['args']['seq']} tokens, "
        f"median of {environment['args']['repeats']} steps after a warm-up.",
        "",
        "| training step | seconds | vs full fine-tuning | vs PEFT | peak extra memory (MB) | vs full fine-tuning |",
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
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
