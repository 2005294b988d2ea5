"""What a run prints and writes when it has run: the run summary and its result files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefixlab.run.artifacts import atomic_write_json, atomic_write_jsonl


def run_summary(counts: dict[str, Any], batch_size: int, accumulate: int, devices: int, mean_tokens: float) -> str:
    effective = batch_size * accumulate * devices
    return (
        f"parameters: trainable {counts['trainable_params']:,} / LM {counts['lm_params']:,} "
        f"({counts['trainable_percent_of_lm']:.3f}%); exported prefix {counts['exported_params']:,} "
        f"({counts['exported_percent_of_lm']:.3f}%)\n"
        f"effective batch {effective} examples (batch {batch_size} x accumulate {accumulate} x devices {devices}), "
        f"about {effective * mean_tokens:,.0f} tokens per optimizer step"
    )


def write_results(run_dir: Path, metrics: dict, predictions: list[dict] | None) -> None:
    if predictions is not None:
        atomic_write_jsonl(run_dir / "predictions.jsonl", predictions)
    atomic_write_json(run_dir / "metrics.json", metrics)
