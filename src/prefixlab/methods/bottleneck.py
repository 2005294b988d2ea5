"""Bottleneck adapters (the paper's ADAPTER baseline; ``engine/bottleneck_adapters.py``): one
``adapter`` method, sized by ``method.bottleneck`` or ``method.adapter_params_percent``
(``conf/method/adapter.yaml``, ``adapter_3pct.yaml``, ``adapter_0p1pct.yaml``). Decoder-only;
exported as the adapter weights (safetensors) + JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:  # torch only in type hints: the CLI imports this module for its schema
    from torch import nn

from prefixlab.methods.registry import DECODER, Check, MethodOptions, MethodSpec, register_method

PLACEMENTS = ("ffn", "houlsby")
STYLES = ("houlsby", "lin")  # engine.bottleneck_adapters.STYLES


# engine.bottleneck_adapters.CHILD, written out: the engine imports torch, this schema must not
# (tests/cli/test_help.py checks the two agree)
CHILD = "bottleneck_adapter"


@dataclass
class AdapterOptions(MethodOptions):
    """``method.*`` of adapter: its size (exactly one of bottleneck and adapter_params_percent) and layout."""

    schema_name = "adapter_schema"
    bottleneck: Optional[int] = field(default=None, metadata={"help": "width r of each bottleneck adapter (2*d*r + r + d parameters each); null with adapter_params_percent"})
    adapter_params_percent: Optional[float] = field(default=None, metadata={"help": "size r so the adapters hold this % of the LM's parameters (the paper's ADAPTER(3%) / (0.1%)); null with bottleneck"})
    adapter_placement: str = field(default="ffn", metadata={"help": "ffn (one after each feed-forward block) | houlsby (after attention too); adapter_style=houlsby only"})
    # default houlsby: a config without the key was written when prefixlab had only those (conf/method/adapter.yaml sets lin)
    adapter_style: str = field(default="houlsby", metadata={"help": "lin (Lin et al. 2020, the paper's, conf/method/adapter.yaml: a layer norm inside, at each block's output) | houlsby (on the sublayer's output, no layer norm)"})
    init_std: float = field(default=0.02, metadata={"help": "std of the random init of the down-projection"})

    def checks(self, spec: MethodSpec) -> list[Check]:
        percent = self.adapter_params_percent
        return [
            ((self.bottleneck is None) != (percent is None), "bottleneck", self.bottleneck,
             "set exactly one of method.bottleneck and method.adapter_params_percent"),
            (self.bottleneck is None or self.bottleneck >= 1, "bottleneck", self.bottleneck, "must be >= 1"),
            (percent is None or (math.isfinite(percent) and 0 < percent <= 100), "adapter_params_percent", percent,
             "must be in (0, 100]"),
            (self.adapter_placement in PLACEMENTS, "adapter_placement", self.adapter_placement, " | ".join(PLACEMENTS)),
            (self.adapter_style in STYLES, "adapter_style", self.adapter_style, " | ".join(STYLES)),
            (self.adapter_style != "lin" or self.adapter_placement == "ffn", "adapter_placement", self.adapter_placement,
             "must be ffn with adapter_style=lin (one adapter at each block's output); houlsby placement needs adapter_style=houlsby"),
            (self.init_std > 0 and math.isfinite(self.init_std), "init_std", self.init_std, "must be > 0"),
        ]


def attach(method: Mapping[str, Any], lm: nn.Module) -> None:
    from prefixlab.engine.bottleneck_adapters import attach_adapters

    # a method dict without adapter_style predates Lin-style adapters: it had Houlsby-style ones
    attach_adapters(lm, bottleneck=method["bottleneck"], placement=method["adapter_placement"],
                    init_std=method["init_std"], params_percent=method["adapter_params_percent"],
                    style=method.get("adapter_style", "houlsby"))


def export_adapters(module, directory: Path) -> Path:
    from prefixlab.engine.bottleneck_adapters import save_adapters

    info = {"base_model": module.hparams.model["name_or_path"], "task": module.hparams.task_name}
    return save_adapters(directory, module.prefixed.lm, module.hparams.method["adapter_placement"], info)


ADAPTER = register_method(MethodSpec(
    name="adapter", summary="trains bottleneck adapters at each block's output (Lin et al.) or after its sublayers (Houlsby)",
    models=frozenset({DECODER}), uses_bottleneck=True, parameter_markers=(CHILD,),
    prepare_lm=attach, export=export_adapters, export_format="bottleneck", options=AdapterOptions,
))
