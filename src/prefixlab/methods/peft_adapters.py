"""PEFT's LoRA and (IA)^3, injected into the LM's own modules (no PeftModel wrapper), so the
same forward and generate paths serve them; only the adapter weights train. Exported as a
PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) that
``PeftModel.from_pretrained`` loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # torch only in type hints: the CLI imports this module for its schema
    from torch import nn

from prefixlab.methods.registry import GENERATIVE, Check, MethodOptions, MethodSpec, get_method, register_method

LORA_MARKER, IA3_MARKER = "lora_", "ia3_"  # in the names of the parameters PEFT injects


@dataclass
class IA3Options(MethodOptions):
    """``method.*`` of ia3: which modules get (IA)^3 vectors."""

    schema_name = "ia3_schema"
    target_modules: list[str] = field(default_factory=list, metadata={"help": "modules to adapt (empty: PEFT's default per model type)"})


@dataclass
class LoRAOptions(IA3Options):
    """``method.*`` of lora: ia3's target modules plus rank, scaling and dropout."""

    schema_name = "lora_schema"
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})

    def checks(self, spec: MethodSpec) -> list[Check]:
        return [
            (self.lora_r >= 1, "lora_r", self.lora_r, "must be >= 1"),
            (self.lora_alpha > 0, "lora_alpha", self.lora_alpha, "must be > 0"),
            (0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)"),
        ]


def _task_type(lm: nn.Module) -> str:
    return "SEQ_2_SEQ_LM" if getattr(lm.config, "is_encoder_decoder", False) else "CAUSAL_LM"


def _targets(method: Mapping[str, Any]) -> list[str] | None:
    return list(method.get("target_modules") or []) or None


def lora_config(method: Mapping[str, Any], lm: nn.Module):
    from peft import LoraConfig

    return LoraConfig(
        task_type=_task_type(lm), r=method["lora_r"], lora_alpha=method["lora_alpha"],
        lora_dropout=method["dropout"], target_modules=_targets(method),
    )


def ia3_config(method: Mapping[str, Any], lm: nn.Module):
    from peft import IA3Config

    targets = _targets(method)
    return IA3Config(task_type=_task_type(lm), target_modules=targets, feedforward_modules=[] if targets else None)


_PEFT_CONFIGS = {}  # method name -> its PEFT config builder (filled below, with the registration)


def peft_config(method: Mapping[str, Any], lm: nn.Module):
    """The PEFT config of a PEFT method (``lora``, ``ia3``) for this LM."""
    return _PEFT_CONFIGS[get_method(method["name"]).name](method, lm)


def inject_peft_adapter(method: Mapping[str, Any], lm: nn.Module) -> None:
    """LoRA / (IA)^3 injected into the LM's own modules; only the adapter weights train."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(peft_config(method, lm), lm, adapter_name="default")
    for name, param in lm.named_parameters():
        param.requires_grad_(LORA_MARKER in name or IA3_MARKER in name)


def export_peft(module, directory: Path) -> Path:
    """A PEFT adapter folder: what ``PeftModel.from_pretrained(base, directory)`` loads."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from prefixlab.run.artifacts import atomic_replace_dir

    lm = module.prefixed.lm
    config = peft_config(module.hparams.method, lm)
    config.base_model_name_or_path = module.hparams.model["name_or_path"]
    # PeftModel names the LM `base_model.model`: its files carry that prefix.
    state = {
        f"base_model.model.{k}": v.detach().cpu().contiguous()
        for k, v in get_peft_model_state_dict(lm, adapter_name="default").items()
    }

    def fill(work: Path) -> None:
        config.save_pretrained(str(work))
        save_file(state, str(work / "adapter_model.safetensors"))

    return atomic_replace_dir(directory, fill)


def _register_peft(spec: MethodSpec, build_config) -> MethodSpec:
    _PEFT_CONFIGS[spec.name] = build_config
    return register_method(spec)


LORA = _register_peft(MethodSpec(
    name="lora", summary="trains LoRA adapters (PEFT), injected into the LM", models=GENERATIVE,
    checkpoint_keys=("lora_r", "target_modules"), parameter_markers=(LORA_MARKER,),
    prepare_lm=inject_peft_adapter, export=export_peft, export_format="peft", options=LoRAOptions,
), lora_config)
IA3 = _register_peft(MethodSpec(
    name="ia3", summary="trains (IA)^3 rescaling vectors (PEFT), injected into the LM", models=GENERATIVE,
    checkpoint_keys=("target_modules",), parameter_markers=(IA3_MARKER,),
    prepare_lm=inject_peft_adapter, export=export_peft, export_format="peft", options=IA3Options,
), ia3_config)
