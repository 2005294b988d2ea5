"""Hugging Face PEFT's prefix-tuning format, both ways, for decoder-only models.

PEFT stores a prefix as ``adapter_config.json`` (a PrefixTuningConfig) and
``adapter_model.safetensors`` holding ``prompt_embeddings``: [num_virtual_tokens,
num_layers * 2 * kv_heads * head_dim], already the computed activations (PEFT saves the
projection's output, not the projection). That row layout is ours (parameterization.py),
so conversion is a reshape plus a geometry check.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefixlab.run.artifacts import atomic_replace_dir
from prefixlab.engine.export import PrefixFormatError
from prefixlab.engine.geometry import PrefixGeometry
from prefixlab.engine.injection import PrefixActivations
from prefixlab.engine.parameterization import rows_to_site_prefix, site_prefix_to_rows

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
# PEFT's config names the base model only: how prefixlab built it (random init, overrides, seed) goes
# into a file of its own, which PEFT ignores and prefixlab-convert / -generate read back.
PREFIXLAB_BUILD_FILE = "prefixlab_base_model.json"


def _decoder_site(geometry: PrefixGeometry):
    if set(geometry.sites) != {"decoder_self"}:
        raise PrefixFormatError(
            f"PEFT's prefix format is supported here for decoder-only models; this one has sites {sorted(geometry.sites)}"
        )
    return geometry.sites["decoder_self"]


def save_peft_prefix(directory: Path, activations: PrefixActivations, geometry: PrefixGeometry, base_model: str,
                     base_build=None) -> Path:
    """Write a prefix that ``PeftModel.from_pretrained(base, directory)`` loads; ``base_build``
    (a ``BaseModelBuild``), if given, into ``prefixlab_base_model.json`` beside it."""
    from peft import PrefixTuningConfig
    from safetensors.torch import save_file

    site = _decoder_site(geometry)
    prefix = activations.sites["decoder_self"]
    rows = site_prefix_to_rows(prefix.keys[:, 0], prefix.values[:, 0]).detach().float().cpu().contiguous()
    config = PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=rows.shape[0],
        token_dim=site.num_kv_heads * site.head_dim,
        num_attention_heads=site.num_kv_heads,
        num_layers=site.num_layers,
        num_transformer_submodules=1,
        encoder_hidden_size=site.num_kv_heads * site.head_dim,
        prefix_projection=False,
        inference_mode=True,
        base_model_name_or_path=base_model,
    )

    def fill(work: Path) -> None:
        config.save_pretrained(str(work))
        save_file({"prompt_embeddings": rows}, str(work / PEFT_WEIGHTS))
        if base_build is not None:
            (work / PREFIXLAB_BUILD_FILE).write_text(json.dumps(base_build.to_dict(), indent=2, sort_keys=True) + "\n")

    return atomic_replace_dir(Path(directory), fill)


def is_peft_prefix(directory: Path) -> bool:
    return (Path(directory) / PEFT_CONFIG).is_file()


def load_peft_prefix(directory: Path, geometry: PrefixGeometry, expected_model: str | None = None) -> PrefixActivations:
    """Read a PEFT prefix-tuning adapter as PrefixActivations for a model of ``geometry``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    site = _decoder_site(geometry)
    try:
        config = json.loads((directory / PEFT_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PrefixFormatError(f"{directory / PEFT_CONFIG} cannot be read as JSON ({error})") from error
    if config.get("peft_type") != "PREFIX_TUNING":
        raise PrefixFormatError(f"{directory} holds a PEFT {config.get('peft_type')!r} adapter, not PREFIX_TUNING")
    base = config.get("base_model_name_or_path")
    if expected_model is not None and base and base != expected_model:
        raise PrefixFormatError(f"{directory} was trained for base model {base!r}, not {expected_model!r}")
    try:
        rows = load_file(str(directory / PEFT_WEIGHTS))["prompt_embeddings"]
    except Exception as error:  # safetensors raises several types for truncated files
        raise PrefixFormatError(f"{directory / PEFT_WEIGHTS} cannot be read ({error}); truncated or corrupted?") from error
    if rows.dim() != 2 or rows.shape[1] != site.values_per_token:
        raise PrefixFormatError(
            f"{directory}: prompt_embeddings {tuple(rows.shape)} do not fit the model's geometry "
            f"({site.num_layers} layers x 2 x {site.num_kv_heads} kv heads x {site.head_dim} = {site.values_per_token} per position)"
        )
    return PrefixActivations({"decoder_self": rows_to_site_prefix(rows.float(), site)})
