"""Evaluation without training: what ``prefixlab-eval`` scores.

A source is one of
* a training checkpoint (``.ckpt``: a run's ``checkpoints/last.ckpt``): the module is rebuilt
  from the checkpoint's own model and method settings and its trainable state is loaded;
* an exported prefix folder, prefixlab's (``prefix_config.json``) or PEFT's prefix-tuning
  adapter (``adapter_config.json``): its activations are the prefix, fixed;
* an encoder export (``head_config.json``: a head, and a prefix for prefix methods);
* nothing: the bare model (the zero-shot baseline of any task).
The module is the training path's own (``PrefixTuningModule``, ``EncoderTaskModule``), so the
task's prompts, decoding and metrics are exactly a training run's. ``describe_source`` reads only
small files, so a bad source is one line before any weights load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SPLITS = {"validation": "val", "test": "test"}  # the datamodule's split, the module's stage name


class EvaluationSourceError(ValueError):
    """``eval.source`` is not a checkpoint, an exported prefix or an encoder export."""


@dataclass
class Source:
    kind: str  # checkpoint | prefix | peft_prefix | encoder_export | none
    path: Path | None
    base_model: str | None = None  # the model the source was made for, where it says
    hyper_parameters: dict | None = None  # a checkpoint's
    global_step: int | None = None
    base_build: Any = None  # an export's BaseModelBuild (engine/export.py), where it records one


def describe_source(source: str | None) -> Source:
    """What ``eval.source`` is, from its small files only (no weights)."""
    if source is None or not str(source).strip():
        return Source("none", None)
    path = Path(source).expanduser()
    if path.is_file():
        return _checkpoint(path)
    if not path.is_dir():
        raise EvaluationSourceError(f"eval.source={source!r}: no such file or folder")
    from prefixlab.engine.peft_format import is_peft_prefix

    from prefixlab.training.base_model import read_base_build

    if (path / "head_config.json").is_file():
        from prefixlab.training.encoder_module import read_head_config

        return Source("encoder_export", path, read_head_config(path)["base_model"], base_build=read_base_build(path))
    if (path / "prefix_config.json").is_file():
        from prefixlab.engine.export import load_prefix

        exported = load_prefix(path)  # every field checked: one line if bad
        return Source("prefix", path, exported.base_model, base_build=exported.base_build)
    if is_peft_prefix(path):
        build = read_base_build(path)
        return Source("peft_prefix", path, build.name_or_path if build else None, base_build=build)
    if (path / "prefix" / "prefix_config.json").is_file() or (path / "checkpoints" / "last.ckpt").is_file():
        hint = path / "prefix" if (path / "prefix").is_dir() else path / "checkpoints" / "last.ckpt"
        raise EvaluationSourceError(f"eval.source={source!r} is a run folder; give its export or checkpoint, e.g. {hint}")
    raise EvaluationSourceError(f"eval.source={source!r} holds no prefix_config.json, adapter_config.json or head_config.json: "
                                "give a .ckpt file, an exported prefix folder or an encoder export")


def _checkpoint(path: Path) -> Source:
    from prefixlab.training.resume import CheckpointError, read_checkpoint

    try:  # the hyperparameters first (weights_only: data, never code), then the full check of the file
        saved = torch.load(path, map_location="cpu", weights_only=True)
        hp = saved["hyper_parameters"]
        model, method, task_name = hp["model"], hp["method"], hp["task_name"]
    except Exception:  # read_checkpoint below names what is wrong (truncated, a pickle payload, not ours)
        hp = None
    if hp is None:
        read_checkpoint(path, {}, {}, "")
        raise CheckpointError(f"checkpoint {path} is not a prefixlab training checkpoint")
    checked = read_checkpoint(path, model, method, task_name)
    return Source("checkpoint", path, model["name_or_path"], hp, checked["global_step"])


def adopt_recorded_model(source: Source, settings, resolved: dict) -> bool:
    """An export that records its base model's build is evaluated on that model (a random-init one
    drawn again from its seed), whatever ``model=`` says, as a checkpoint is; returns whether it did."""
    if source.kind == "checkpoint" or source.base_build is None:
        return False
    from prefixlab.training.base_model import model_section

    recorded = model_section(source.base_build)
    recorded.pop("gradient_checkpointing")
    resolved["model"] = {**resolved["model"], **recorded}
    for key, value in recorded.items():
        setattr(settings.model, key, value)
    return True


def check_model_matches(source: Source, model_name: str) -> None:
    """A prefix is made for one base model: evaluating it on another is refused before loading."""
    if source.base_model is not None and source.kind != "checkpoint" and source.base_model != model_name:
        raise EvaluationSourceError(
            f"eval.source={source.path} was made for base model {source.base_model!r}, this evaluation loads "
            f"{model_name!r}; add model.name_or_path={source.base_model}")


class FixedPrefix(torch.nn.Module):
    """A prefix encoder that returns loaded activations (no parameters: nothing trains)."""

    def __init__(self, activations) -> None:
        super().__init__()
        self.activations = activations

    def forward(self):
        return self.activations


def build_lm_module(source: Source, resolved: dict, task_name: str, eval_zero_shot: bool):
    """The LM module for ``source``: a checkpoint's own model and method with its trainable
    state, a fixed exported prefix, or no prefix (the bare model)."""
    from prefixlab.training.lm_module import PrefixTuningModule

    if source.kind == "checkpoint":
        hp = source.hyper_parameters
        module = PrefixTuningModule(model=hp["model"], method=hp["method"], optim=hp["optim"],
                                    generation=resolved["generation"], task_name=task_name,
                                    eval_zero_shot=eval_zero_shot, max_steps=hp.get("max_steps", 1))
        load_trainable_state(source.path, module)
        return module
    # an exported or absent prefix: the module of a flat prefix (no MLP), its prefix replaced below
    method = {**resolved["method"], "name": "prefix_flat", "mid_dim": None, "init": "random"}

    def make():
        return PrefixTuningModule(model=resolved["model"], method=method, optim=resolved["optim"],
                                  generation=resolved["generation"], task_name=task_name,
                                  eval_zero_shot=eval_zero_shot and source.kind != "none", max_steps=1)

    module = _rebuilt(source, make)
    if source.kind == "none":
        module.prefixed.prefix_encoder = None
        module.is_prefix_method = False
        return module
    module.prefixed.prefix_encoder = FixedPrefix(load_prefix_activations(source, module.prefixed.geometry))
    return module


def _rebuilt(source: Source, make):
    """``make()`` (a module that builds its base model) as the export's recorded build: a random-init
    base drawn from its seed, then checked against the recorded fingerprint (one line if it differs)."""
    build = source.base_build
    if build is None:
        return make()
    from prefixlab.training.base_model import check_rebuilt, seeded_like

    built = seeded_like(build, make)
    check_rebuilt(build, (built[1] if isinstance(built, tuple) else built).base_build)
    return built


def load_prefix_activations(source: Source, geometry):
    from prefixlab.engine.export import PrefixFormatError, check_prefix_fits, load_prefix
    from prefixlab.engine.peft_format import load_peft_prefix

    if source.kind == "peft_prefix":
        return load_peft_prefix(source.path, geometry)
    exported = load_prefix(source.path)
    check_prefix_fits(exported.geometry, geometry, str(source.path), "the model")
    if exported.metadata.get("placement") == "infix":
        raise PrefixFormatError(f"{source.path} is an infix; evaluate its training checkpoint instead (the infix's "
                                "visibility comes from its method)")
    return exported.activations


def load_trainable_state(path: Path, module: torch.nn.Module) -> None:
    """A checkpoint's trainable tensors into ``module`` (shapes checked first: one line if they differ)."""
    from prefixlab.training.resume import check_trainable_state

    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    check_trainable_state(path, {name: tuple(t.shape) for name, t in state.items()}, module)
    module.load_state_dict(state, strict=False)


def build_encoder_module(source: Source, settings, resolved: dict):
    """The encoder path: a checkpoint's module, or an encoder export's head (and prefix)."""
    from prefixlab.training.encoder_module import attach_export, build_encoder_run

    if source.kind not in ("checkpoint", "encoder_export"):
        raise EvaluationSourceError(f"eval.source={source.path}: an encoder is evaluated from a training checkpoint or "
                                    "an encoder export (head_config.json); a bare encoder has no trained head")
    if source.kind == "checkpoint":
        resolved = {**resolved, "model": source.hyper_parameters["model"], "method": source.hyper_parameters["method"]}
    datamodule, module = _rebuilt(source, lambda: build_encoder_run(settings, resolved))
    if source.kind == "checkpoint":
        load_trainable_state(source.path, module)
    else:
        prefix = attach_export(module.prefixed.model, source.path)
        module.prefixed.prefix_encoder = FixedPrefix(prefix) if prefix is not None else None
        module.is_prefix_method = prefix is not None
    return datamodule, module


def evaluated_record(source: Source, split: str) -> dict:
    """What ``prefixlab-eval`` evaluated, as its metrics.json says (completed or not)."""
    return {"source": str(source.path) if source.path else None, "kind": source.kind, "split": split,
            **({"checkpoint_step": source.global_step} if source.global_step is not None else {})}


def metrics_record(source: Source, split: str, stage_metrics: dict[str, Any], counts: dict, started: float) -> dict:
    import time

    return {
        "status": "completed",
        "evaluated": evaluated_record(source, split),
        **counts,
        **{k: float(v) for k, v in stage_metrics.items()},
        "runtime_s": round(time.time() - started, 1),
    }
