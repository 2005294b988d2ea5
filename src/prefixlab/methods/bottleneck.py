"""Bottleneck adapters (the paper's ADAPTER baseline; ``engine/bottleneck_adapters.py``): one
``adapter`` method, sized by ``method.bottleneck`` or ``method.adapter_params_percent``
(``conf/method/adapter.yaml``, ``adapter_3pct.yaml``, ``adapter_0p1pct.yaml``). Decoder-only;
exported as the adapter weights (safetensors) + JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from prefixlab.engine.bottleneck_adapters import CHILD
from prefixlab.methods.registry import DECODER, MethodSpec, register_method


def attach(method: Mapping[str, Any], lm: nn.Module) -> None:
    from prefixlab.engine.bottleneck_adapters import attach_adapters

    attach_adapters(lm, bottleneck=method["bottleneck"], placement=method["adapter_placement"],
                    init_std=method["init_std"], params_percent=method["adapter_params_percent"])


def export_adapters(module, directory: Path) -> Path:
    from prefixlab.engine.bottleneck_adapters import save_adapters

    info = {"base_model": module.hparams.model["name_or_path"], "task": module.hparams.task_name}
    return save_adapters(directory, module.prefixed.lm, module.hparams.method["adapter_placement"], info)


ADAPTER = register_method(MethodSpec(
    name="adapter", summary="trains bottleneck adapters after each feed-forward block (Houlsby / Lin et al.)",
    models=frozenset({DECODER}), uses_bottleneck=True, parameter_markers=(CHILD,),
    prepare_lm=attach, export=export_adapters, export_format="bottleneck",
))
