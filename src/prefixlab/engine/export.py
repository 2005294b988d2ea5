"""The exported prefix: computed activations (never the MLP), as safetensors plus JSON.

``prefix/prefix.safetensors``: for each site ``<site>.keys`` and ``<site>.values``,
[num_layers, num_kv_heads, prefix_len, head_dim].
``prefix/prefix_config.json``: format version, base model id, model type, geometry,
prefix length, method, how the base model was built (``base_model_build``: ``BaseModelBuild``;
absent in older exports, which mean the pretrained model of that name), and whatever metadata
the caller adds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


from prefixlab.run.artifacts import atomic_replace_dir
from prefixlab.engine.geometry import PrefixGeometry
from prefixlab.engine.injection import PrefixActivations, SitePrefix

FORMAT_VERSION = 1
WEIGHTS_FILE = "prefix.safetensors"
CONFIG_FILE = "prefix_config.json"


class PrefixFormatError(ValueError):
    """An exported prefix is unreadable, of another format version, or for another model."""


REMOTE_CODE_KEY = "trust_remote_code"


def _drop_remote_code_opt_in(config: dict, config_path: Path) -> None:
    """An export can never turn on model code: a ``trust_remote_code`` key in its config or its
    metadata is removed (with one warning line), so nothing downstream can pass it on."""
    import sys

    found = []
    for where, section in (("", config), ("metadata.", config.get("metadata"))):
        if isinstance(section, dict) and REMOTE_CODE_KEY in section:
            del section[REMOTE_CODE_KEY]
            found.append(where)
    if found:
        print(f"prefixlab: warning: {config_path}: ignoring {', '.join(w + REMOTE_CODE_KEY for w in found)}; "
              "a prefix folder cannot enable custom model code (only a training run's model.trust_remote_code can)",
              file=sys.stderr)


_SITE_FIELDS = ("num_layers", "num_kv_heads", "head_dim")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_config(config: dict, config_path: Path) -> None:
    """Every field load_prefix reads, with its type, before any of it is used: a downloaded or
    hand-edited prefix_config.json gets one line naming the field, never a traceback."""
    def bad(field_name: str, expected: str, value) -> PrefixFormatError:
        return PrefixFormatError(f"{config_path}: {field_name} is {value!r}; expected {expected}")

    for key in ("base_model", "method"):
        if not isinstance(config.get(key), str) or not config[key].strip():
            raise bad(key, "a non-empty string", config.get(key, "missing"))
    if not _positive_int(config.get("prefix_length")):
        raise bad("prefix_length", "a positive integer", config.get("prefix_length", "missing"))
    if not isinstance(config.get("metadata", {}), dict):
        raise bad("metadata", "a JSON object", config["metadata"])
    geometry = config.get("geometry")
    if not isinstance(geometry, dict) or not isinstance(geometry.get("model_type"), str) \
            or not isinstance(geometry.get("sites"), dict) or not geometry["sites"]:
        raise bad("geometry", 'an object {"model_type": str, "sites": {site: {...}}}', geometry if geometry is not None else "missing")
    for site, fields in geometry["sites"].items():
        if not isinstance(fields, dict) or sorted(fields) != sorted(_SITE_FIELDS) \
                or not all(_positive_int(fields[f]) for f in _SITE_FIELDS):
            raise bad(f"geometry.sites.{site}", f"an object of positive integers {', '.join(_SITE_FIELDS)}", fields)


BUILD_KEY = "base_model_build"


@dataclass(frozen=True)
class BaseModelBuild:
    """How the frozen base model of a run was built: what rebuilding it for the export needs.

    A pretrained model is its name (plus dtype and attention kernel, which change numerics, not
    weights). A random-init model (``model.random_init``, the tiny debugging models) is its name,
    ``config_overrides`` and the torch seed its weights were drawn from: ``torch.manual_seed(seed)``
    then ``load_lm(..., random_init=True)`` draws the same weights, and ``weights_sha256`` (of the
    weights as built) proves it at rebuild time: a rebuild that differs is refused, never used.
    """

    name_or_path: str
    random_init: bool = False
    config_overrides: dict = field(default_factory=dict)
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    seed: int | None = None
    weights_sha256: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data, where: str) -> "BaseModelBuild":
        """One PrefixFormatError line naming the field for a damaged record."""
        def bad(name: str, expected: str, value) -> PrefixFormatError:
            return PrefixFormatError(f"{where}: {BUILD_KEY}.{name} is {value!r}; expected {expected}")

        if not isinstance(data, dict):
            raise PrefixFormatError(f"{where}: {BUILD_KEY} is {data!r}; expected a JSON object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise PrefixFormatError(f"{where}: {BUILD_KEY} has unknown fields {unknown} (written by a newer prefixlab?)")
        for name in ("name_or_path", "dtype", "attn_implementation"):
            if name in data and (not isinstance(data[name], str) or not data[name]):
                raise bad(name, "a non-empty string", data[name])
        if not isinstance(data.get("random_init", False), bool):
            raise bad("random_init", "true or false", data["random_init"])
        if not isinstance(data.get("config_overrides", {}), dict):
            raise bad("config_overrides", "a JSON object", data["config_overrides"])
        seed = data.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise bad("seed", "an integer", seed)
        if data.get("random_init") and (seed is None or not data.get("weights_sha256")):
            raise PrefixFormatError(f"{where}: {BUILD_KEY} says random_init but records no seed and weights_sha256: "
                                    "its random base model cannot be rebuilt (retrain with this prefixlab)")
        if "name_or_path" not in data:
            raise bad("name_or_path", "a non-empty string", "missing")
        return cls(**data)

    def describe(self) -> str:
        """One phrase for messages and model cards."""
        if not self.random_init:
            return self.name_or_path
        overrides = ", ".join(f"{k}={v}" for k, v in sorted(self.config_overrides.items()))
        return f"{self.name_or_path} with random weights (seed {self.seed}{'; ' + overrides if overrides else ''})"


def weights_sha256(model) -> str:
    """A fingerprint of a module's weights: SHA-256 over every state-dict tensor's name, dtype,
    shape and bytes, in name order (equal exactly when ``torch.equal`` holds for every tensor)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_prefix_fits(prefix: PrefixGeometry, model: PrefixGeometry, where: str, model_name: str) -> None:
    """Does a prefix of geometry ``prefix`` fit a model of geometry ``model``? The one check that
    generation, evaluation and the encoder path share: the same model type, and for each of the
    prefix's sites the model's layers, key/value heads and head size. Raises PrefixFormatError
    naming the first difference."""
    if prefix.model_type != model.model_type:
        raise PrefixFormatError(f"{where} is for a {prefix.model_type!r} model, not {model_name} ({model.model_type!r})")
    for site, g in prefix.sites.items():
        have = model.sites.get(site)
        if have is None:
            raise PrefixFormatError(f"{where} has a prefix for attention site {site!r}, which {model_name} does not "
                                    f"have (its sites: {', '.join(sorted(model.sites))})")
        if have != g:
            raise PrefixFormatError(
                f"{where} does not fit the geometry of {model_name}: at {site} the prefix has {g.num_layers} layers x {g.num_kv_heads} "
                f"kv heads x head dim {g.head_dim}, the model {have.num_layers} x {have.num_kv_heads} x {have.head_dim} "
                "(give the base model it was trained on)")


@dataclass
class ExportedPrefix:
    activations: PrefixActivations
    geometry: PrefixGeometry
    base_model: str
    prefix_length: int
    method: str
    metadata: dict = field(default_factory=dict)
    base_build: BaseModelBuild | None = None  # None: the pretrained model base_model names (older exports)


def export_activations(encoder) -> PrefixActivations:
    """What a prefix encoder exports: its activations computed without dropout, detached; the
    encoder's train/eval mode is left as it was (the LM and encoder modules both export this way)."""
    was_training = encoder.training
    encoder.eval()
    try:
        return encoder().detached()
    finally:
        encoder.train(was_training)


def save_prefix(directory: Path, exported: ExportedPrefix) -> Path:
    from safetensors.torch import save_file

    tensors = {}
    for site, prefix in exported.activations.sites.items():
        if prefix.keys.shape[1] != 1:
            raise ValueError("only a single (batch-1) prefix can be exported")
        tensors[f"{site}.keys"] = prefix.keys[:, 0].detach().float().cpu().contiguous()
        tensors[f"{site}.values"] = prefix.values[:, 0].detach().float().cpu().contiguous()
    config = {
        "format": "prefixlab-prefix",
        "format_version": FORMAT_VERSION,
        "base_model": exported.base_model,
        "geometry": exported.geometry.to_dict(),
        "prefix_length": exported.prefix_length,
        "method": exported.method,
        "metadata": exported.metadata,
        **({BUILD_KEY: exported.base_build.to_dict()} if exported.base_build is not None else {}),
    }

    def fill(work: Path) -> None:
        save_file(tensors, str(work / WEIGHTS_FILE))
        (work / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")

    return atomic_replace_dir(Path(directory), fill)


def load_prefix(directory: Path, expected_geometry: PrefixGeometry | None = None, expected_model: str | None = None) -> ExportedPrefix:
    """Read an exported prefix, checking it against the model it is meant for. Raises PrefixFormatError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise PrefixFormatError(f"{directory} is not an exported prefix: expected {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PrefixFormatError(f"{config_path} is not valid JSON ({error}); the export is corrupted") from error
    if not isinstance(config, dict):
        raise PrefixFormatError(f"{config_path} is not a JSON object; the export is corrupted")
    _drop_remote_code_opt_in(config, config_path)
    if config.get("format") != "prefixlab-prefix" or config.get("format_version") != FORMAT_VERSION:
        raise PrefixFormatError(
            f"{config_path}: format {config.get('format')!r} version {config.get('format_version')!r}, "
            f"this prefixlab reads prefixlab-prefix version {FORMAT_VERSION}"
        )
    _check_config(config, config_path)
    geometry = PrefixGeometry.from_dict(config["geometry"])
    if expected_model is not None and config["base_model"] != expected_model:
        raise PrefixFormatError(
            f"{directory} was trained for base model {config['base_model']!r}, not {expected_model!r}"
        )
    build = BaseModelBuild.from_dict(config[BUILD_KEY], str(config_path)) if BUILD_KEY in config else None
    if build is not None and build.name_or_path != config["base_model"]:
        raise PrefixFormatError(f"{config_path}: {BUILD_KEY}.name_or_path {build.name_or_path!r} is not "
                                f"base_model {config['base_model']!r}; the export is inconsistent")
    if expected_geometry is not None:
        if set(geometry.sites) != set(expected_geometry.sites):
            raise PrefixFormatError(f"{directory} has prefixes for sites {sorted(geometry.sites)}, "
                                    f"the model's geometry has {sorted(expected_geometry.sites)}")
        check_prefix_fits(geometry, expected_geometry, str(directory), "the model")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise PrefixFormatError(f"{weights_path} cannot be read ({error}); the export is truncated or corrupted") from error
    sites = {}
    for site, g in geometry.sites.items():
        shape = (g.num_layers, g.num_kv_heads, config["prefix_length"], g.head_dim)
        keys, values = tensors.get(f"{site}.keys"), tensors.get(f"{site}.values")
        if keys is None or values is None or tuple(keys.shape) != shape or tuple(values.shape) != shape:
            raise PrefixFormatError(f"{weights_path}: site {site!r} tensors missing or not of shape {shape}")
        for name, tensor in ((f"{site}.keys", keys), (f"{site}.values", values)):
            if not tensor.is_floating_point():
                raise PrefixFormatError(f"{weights_path}: tensor {name} has dtype {tensor.dtype}; a prefix holds "
                                        f"floating-point activations (the export is not prefixlab's or is damaged)")
            if not bool(tensor.isfinite().all()):
                raise PrefixFormatError(f"{weights_path}: tensor {name} holds NaN or infinite values; "
                                        f"this prefix would generate garbage (retrain or re-export it)")
        sites[site] = SitePrefix(keys=keys.unsqueeze(1), values=values.unsqueeze(1))
    return ExportedPrefix(
        activations=PrefixActivations(sites),
        geometry=geometry,
        base_model=config["base_model"],
        prefix_length=config["prefix_length"],
        method=config["method"],
        metadata=config.get("metadata", {}),
        base_build=build,
    )
