"""``prefixlab-train --help`` (and ``prefixlab-eval --help``): the config groups with their options,
and every key with its default and its help text, read from the schemas (``metadata={"help": ...}``)
and the option files under ``conf/``.

Written from the dataclasses, without composing the config or importing torch, so that it answers
at once; ``--hydra-help`` is still Hydra's, and ``--cfg job`` prints the config a command composes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

import yaml

# the groups whose options each have their own schema: their keys are listed per schema
_OPTION_SCHEMA_GROUPS = ("method", "task")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return "???"


def _shown(value: Any) -> str:
    """A value as it is typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return str(value)


def key_lines(schema: type, prefix: str = "", skip: tuple[str, ...] = ()) -> Iterator[str]:
    """``  trainer.max_steps = 80  # optimizer steps ...`` for every key of ``schema``, nested ones dotted."""
    for field in dataclasses.fields(schema):
        if field.name in skip:
            continue
        value = _default(field)
        if dataclasses.is_dataclass(value):
            yield from key_lines(type(value), f"{prefix}{field.name}.")
            continue
        text = field.metadata.get("help")
        yield f"  {prefix}{field.name} = {_shown(value)}" + (f"  # {text}" if text else "")


def _yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _group_defaults(conf: Path, config_name: str) -> dict[str, str]:
    chosen = {}
    for entry in _yaml(conf / f"{config_name}.yaml").get("defaults") or []:
        if isinstance(entry, dict):
            for group, option in entry.items():
                if not str(group).startswith(("optional ", "override ")) and "@" not in str(group):
                    chosen[str(group)] = str(option)
    return chosen


def _schema_of(option_file: Path) -> str | None:
    """The schema an option file merges first (``defaults: [prefix_schema, _self_]``)."""
    for entry in _yaml(option_file).get("defaults") or []:
        if isinstance(entry, str) and entry.split("@", 1)[0].endswith("schema"):
            return entry.split("@", 1)[0]
    return None


def render(app: str, usage: str, schema: type, conf: Path, config_name: str, option_schemas: dict[str, dict[str, type]]) -> str:
    """The help text. option_schemas: for ``method`` and ``task``, each schema by its schema_name."""
    chosen = _group_defaults(conf, config_name)
    lines = [usage.strip(), "", "Config groups (group=option; the default marked *):"]
    groups = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != "hydra" and any(p.glob("*.yaml")))
    for group in groups:
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        marked = [f"{o}*" if chosen.get(group) == o else o for o in options]
        lines.append(f"  {group}: {', '.join(marked)}")
    lines += ["", "Keys (key=value; the schema's default, which the chosen options may change  # help):"]
    lines += key_lines(schema, skip=_OPTION_SCHEMA_GROUPS)
    for group in _OPTION_SCHEMA_GROUPS:
        users: dict[str, list[str]] = {}
        for option_file in sorted((conf / group).glob("*.yaml")):
            users.setdefault(_schema_of(option_file) or "", []).append(option_file.stem)
        schemas = option_schemas.get(group, {})
        if not schemas:
            continue
        base = next(iter(schemas.values()))  # the group's base schema comes first: the keys every option has
        lines += ["", f"{group}.* keys of every {group} ({base.__name__}):"]
        lines += key_lines(base, f"{group}.")
        shared = tuple(f.name for f in dataclasses.fields(base))
        for schema_name, options_schema in schemas.items():
            if schema_name in users and options_schema is not base:
                lines += ["", f"{group}.* keys of {options_schema.__name__} ({group}={', '.join(users[schema_name])}), besides those:"]
                lines += key_lines(options_schema, f"{group}.", skip=shared)
    lines += ["", "-m / --multirun: sweep comma-separated values (multirun/<date>/<time>/<job>/); "
              "--cfg job: print the composed config; --config-dir DIR: your own config files "
              "(DIR/experiment/<name>.yaml: experiment=<name>); --hydra-help: Hydra's own options."]
    return "\n".join(lines) + "\n"


def print_help(app: str, usage: str, schema: type, conf: Path, config_name: str) -> None:
    from prefixlab.methods import option_schemas
    from prefixlab.tasks import task_schemas

    print(render(app, usage, schema, conf, config_name, {"method": option_schemas(), "task": task_schemas()}), end="")
