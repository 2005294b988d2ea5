"""Strict keys: a composed config holds only keys that some schema declares.

Hydra's ``+key=value`` adds a key that is in no schema (``+trainer.fast_dev_runn=true``,
``+method.prefix_lenght=5``, ``+foo=1``); the run would then silently ignore what the user asked
for. ``check_known_keys`` walks the composed config against its dataclass schemas (each node keeps
the type it was merged into) and refuses the first unknown key in one line, naming the nearest
valid key (``difflib`` over the keys of the schema at that path). Nodes typed as plain dicts
(``model.config_overrides``) take any key. ``hydra.*`` is Hydra's own and stays free.
"""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefixlab.config import ConfigError


def _schema_keys(schema: Any) -> list[str] | None:
    if isinstance(schema, type) and is_dataclass(schema):
        return [f.name for f in fields(schema)]
    return None


def unknown_key_message(full_key: str, schema: Any) -> str:
    """``trainer.fast_dev_runn is not a key of trainer (TrainerConfig); did you mean trainer.fast_dev_run?``"""
    parent, _, leaf = full_key.rpartition(".")
    where = parent or "the config"
    keys = _schema_keys(schema)
    if keys is None:  # Hydra did not say which schema: name the key alone
        return f"{full_key} is not a key of {where}"
    schema_name = getattr(schema, "__name__", str(schema))
    close = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.6)
    prefix = f"{parent}." if parent else ""
    hint = f"did you mean {prefix}{close[0]}?" if close else f"its keys: {', '.join(keys)}"
    return f"{full_key} is not a key of {where} ({schema_name}); {hint}"


def unknown_keys(cfg: DictConfig, path: str = "") -> list[tuple[str, Any]]:
    """Every key of ``cfg`` that its node's schema lacks, as (dotted key, schema), in config order."""
    found: list[tuple[str, Any]] = []
    schema = OmegaConf.get_type(cfg)
    allowed = _schema_keys(schema)
    for key in cfg.keys():
        dotted = f"{path}.{key}" if path else str(key)
        if not path and key == "hydra":
            continue
        if allowed is not None and key not in allowed:
            found.append((dotted, schema))
            continue
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            found += unknown_keys(child, dotted)
    return found


def check_known_keys(cfg: DictConfig) -> None:
    """Raises ConfigError naming the first key of ``cfg`` that no schema declares."""
    unknown = unknown_keys(cfg)
    if unknown:
        key, schema = unknown[0]
        raise ConfigError(unknown_key_message(key, schema) + (f" ({len(unknown) - 1} more unknown keys)" if len(unknown) > 1 else ""))
