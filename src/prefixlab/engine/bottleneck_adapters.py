"""Bottleneck adapters, the paper's ADAPTER baseline (Houlsby et al. 2019; Li & Liang use the
implementation of Lin et al. 2020): a small residual MLP after a sublayer of a frozen LM.

    h -> h + W_up relu(W_down h + b_down) + b_up      h: [batch, seq, d], W_down: [r, d], W_up: [d, r]

W_up and b_up start at zero, so the adapted LM starts as exactly the pretrained one (Houlsby's
near-identity init, made exact); W_down starts random (std ``init_std``) so that W_up gets a
gradient at the first step. One adapter holds 2 d r + r + d parameters. Placement "ffn" puts
one after each layer's feed-forward block (L adapters, the Lin et al. layout), "houlsby" one
after each attention block as well (2 L). The paper's ADAPTER(3%) and ADAPTER(0.1%) choose r so
that the adapters hold that share of the LM's parameters (``bottleneck_for_percent``).

Two styles (``style``). "houlsby": the adapter above, on a sublayer's output before the block adds
it to the residual stream (placements "ffn", "houlsby"). "lin" (Lin et al. 2020, the code Li & Liang
ran): a layer norm inside and the adapter on the residual stream at each block's output,

    x -> x + W_up relu(W_down LayerNorm(x) + b_down) + b_up      (2 d r + r + 3 d parameters)

one per layer (L adapters; ``placement`` must stay "ffn").

The adapters attach with forward hooks on the LM's own sublayers and are registered as their
child ``bottleneck_adapter``: the LM's parameter names do not change, and device moves, state
dicts and checkpoints carry the adapters along with the LM. Plain torch: no Hydra, no Lightning.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from prefixlab.engine.families import UnsupportedModelError, adapter_for
from prefixlab.run.artifacts import atomic_replace_dir

CHILD = "bottleneck_adapter"  # the child-module name: parameter names contain it
PLACEMENTS = {"ffn": ("mlp",), "houlsby": ("attention", "mlp")}
STYLES = ("houlsby", "lin")
FORMAT = "prefixlab-bottleneck-adapter"
WEIGHTS_FILE = "adapter_weights.safetensors"
CONFIG_FILE = "adapter_config.json"
_SUBLAYER_NAMES = {"mlp": ("mlp", "feed_forward"), "attention": ("self_attn", "attn", "attention")}


class AdapterError(ValueError):
    """Adapters cannot be attached to this model, or an exported adapter does not fit it."""


class BottleneckAdapter(nn.Module):
    """Maps [..., dim] -> [..., dim]; the identity at initialization."""

    def __init__(self, dim: int, bottleneck: int, init_std: float = 0.02, layer_norm_eps: float | None = None) -> None:
        super().__init__()
        # Lin et al.'s adapter normalizes its input (the residual stream it reads is not normalized)
        self.layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps) if layer_norm_eps is not None else None
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        inner = hidden if self.layer_norm is None else self.layer_norm(hidden)
        return hidden + self.up(torch.relu(self.down(inner)))

    def hook(self, module: nn.Module, inputs, output):
        # Attention blocks (and some families' layers) return (hidden, weights, ...); feed-forward blocks a tensor.
        if isinstance(output, tuple):
            return (self(output[0]), *output[1:])
        return self(output)


def parameters_per_adapter(dim: int, bottleneck: int, style: str = "houlsby") -> int:
    return 2 * dim * bottleneck + bottleneck + dim + (2 * dim if style == "lin" else 0)


def bottleneck_for_percent(percent: float, lm_params: int, dim: int, sites: int, style: str = "houlsby") -> int:
    """The width r whose ``sites`` adapters hold closest to ``percent`` % of ``lm_params`` (at least 1)."""
    per_site = percent / 100.0 * lm_params / sites
    return max(1, round((per_site - parameters_per_adapter(dim, 0, style)) / (2 * dim + 1)))


def _layer_stack(lm: nn.Module) -> nn.ModuleList:
    """The LM's layers, where its family adapter says they are (``engine/families.py``)."""
    not_decoder_only = f"bottleneck adapters are implemented for decoder-only LMs, not {lm.config.model_type!r}"
    if getattr(lm.config, "is_encoder_decoder", False):
        raise AdapterError(not_decoder_only)
    try:
        family = adapter_for(lm)
    except UnsupportedModelError as error:
        raise AdapterError(str(error)) from None
    if family.is_encoder_only:
        raise AdapterError(not_decoder_only)
    return family.layers(lm)


def adapter_sites(lm: nn.Module, placement: str, style: str = "houlsby") -> list[nn.Module]:
    """The modules whose output gets an adapter: style "lin", every layer (block); "houlsby", the
    sublayers of ``placement``, layer by layer (attention before feed-forward)."""
    if placement not in PLACEMENTS:
        raise AdapterError(f"adapter placement {placement!r}: expected one of {', '.join(PLACEMENTS)}")
    if style not in STYLES:
        raise AdapterError(f"adapter style {style!r}: expected one of {', '.join(STYLES)}")
    if style == "lin":
        if placement != "ffn":
            raise AdapterError(f"adapter style 'lin' puts one adapter at each block's output: placement {placement!r} "
                               "does not apply (use placement 'ffn', or style 'houlsby')")
        return list(_layer_stack(lm))
    sites = []
    for index, layer in enumerate(_layer_stack(lm)):
        for kind in PLACEMENTS[placement]:
            found = [getattr(layer, n) for n in _SUBLAYER_NAMES[kind] if isinstance(getattr(layer, n, None), nn.Module)]
            if not found:
                raise AdapterError(
                    f"layer {index} of the {lm.config.model_type!r} model has no {kind} block "
                    f"(looked for {', '.join(_SUBLAYER_NAMES[kind])})"
                )
            sites.append(found[0])
    return sites


def lm_parameter_count(lm: nn.Module) -> int:
    """The LM's own parameters (tied tensors once), without adapters already attached."""
    return sum(p.numel() for n, p in lm.named_parameters() if CHILD not in n)


def attach_adapters(
    lm: nn.Module,
    bottleneck: int | None = None,
    placement: str = "ffn",
    init_std: float = 0.02,
    params_percent: float | None = None,
    style: str = "houlsby",
) -> list[BottleneckAdapter]:
    """Attach one trainable adapter per site (``bottleneck`` wide, or sized by ``params_percent``),
    of ``style`` houlsby or lin (module docstring).

    The LM's own parameters are left as they are (the caller freezes them); the adapters are
    created on the LM's device and dtype and require grad.
    """
    if any(CHILD in n for n, _ in lm.named_modules()):
        raise AdapterError("this LM already has bottleneck adapters attached")
    sites = adapter_sites(lm, placement, style)
    dim = lm.config.hidden_size
    if params_percent is not None:
        bottleneck = bottleneck_for_percent(params_percent, lm_parameter_count(lm), dim, len(sites), style)
    if bottleneck is None or bottleneck < 1:
        raise AdapterError(f"adapter bottleneck must be >= 1 (got {bottleneck}); or give params_percent")
    reference = next(lm.parameters())
    eps = (getattr(lm.config, "layer_norm_epsilon", None) or 1e-5) if style == "lin" else None
    adapters = []
    for sublayer in sites:
        adapter = BottleneckAdapter(dim, bottleneck, init_std, layer_norm_eps=eps).to(device=reference.device, dtype=reference.dtype)
        sublayer.add_module(CHILD, adapter)
        sublayer.register_forward_hook(adapter.hook)
        adapters.append(adapter)
    return adapters


def adapter_state(lm: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors under the LM's parameter names (what is exported)."""
    return {n: p.detach().cpu().contiguous() for n, p in lm.named_parameters() if CHILD in n}


def describe(adapters: list[BottleneckAdapter], placement: str) -> dict:
    first = adapters[0]
    return {
        "format": FORMAT,
        "version": 1,
        "placement": placement,
        "style": "lin" if first.layer_norm is not None else "houlsby",
        "bottleneck": first.down.out_features,
        "hidden_size": first.down.in_features,
        "adapters": len(adapters),
        "parameters": sum(p.numel() for a in adapters for p in a.parameters()),
    }


def save_adapters(directory: Path, lm: nn.Module, placement: str, metadata: dict | None = None) -> Path:
    """Write ``adapter_weights.safetensors`` (tensors under the LM's parameter names) and
    ``adapter_config.json`` (format, placement, bottleneck, counts, plus ``metadata``)."""
    from safetensors.torch import save_file

    adapters = [m for n, m in lm.named_modules() if n.endswith(CHILD)]
    if not adapters:
        raise AdapterError("this LM has no bottleneck adapters to save")
    state = adapter_state(lm)
    info = {**describe(adapters, placement), **(metadata or {})}

    def fill(work: Path) -> None:
        save_file(state, str(work / WEIGHTS_FILE))
        (work / CONFIG_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")

    return atomic_replace_dir(Path(directory), fill)


def load_adapters(directory: Path, lm: nn.Module) -> list[BottleneckAdapter]:
    """Attach the exported adapters in ``directory`` to ``lm`` (the base model they were trained on)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        info = json.loads((directory / CONFIG_FILE).read_text())
        state = load_file(str(directory / WEIGHTS_FILE))
    except (OSError, ValueError) as error:
        raise AdapterError(f"{directory}: not an exported adapter ({error})") from error
    if info.get("format") != FORMAT:
        raise AdapterError(f"{directory}: format {info.get('format')!r}, expected {FORMAT!r}")
    if info["hidden_size"] != lm.config.hidden_size:
        raise AdapterError(f"{directory}: trained for hidden size {info['hidden_size']}, this LM has {lm.config.hidden_size}")
    # an export without "style" was written before Lin-style adapters existed: Houlsby-style
    adapters = attach_adapters(lm, bottleneck=info["bottleneck"], placement=info["placement"],
                               style=info.get("style", "houlsby"))
    expected = set(adapter_state(lm))
    if set(state) != expected:
        raise AdapterError(
            f"{directory}: adapter tensors do not match this LM's layers "
            f"(missing {sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})"
        )
    parameters = dict(lm.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor)
    return adapters
