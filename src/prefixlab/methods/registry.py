"""The method registry: every ``method.name`` is a ``MethodSpec`` registered here.

In the spirit of PEFT's tuners (``register_peft_method``): a method family's module
(``prefix.py``, ``finetune.py``, ``peft_adapters.py``, ``bottleneck.py``, ``head.py``) declares
its methods with ``register_method(MethodSpec(...))`` when ``prefixlab.methods`` is imported,
and the rest of prefixlab asks the spec (``get_method(name).is_prefix``, ``.packable``,
``.target_only``, ``.export``, ...) instead of comparing method names. A new method is its
module plus its YAML under ``conf/method/``; config validation, the LM and encoder modules,
resuming, exports and packed sweeps follow the spec.

Plain Python (and torch for the type hints): no Hydra, no Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

if TYPE_CHECKING:  # the CLI imports the registry for the schemas: no torch until a run needs it
    from torch import nn

# The kinds of model a method may fit (``MethodSpec.models``).
DECODER = "decoder-only"
ENCODER_DECODER = "encoder-decoder"
ENCODER = "encoder"
MODEL_KINDS = (DECODER, ENCODER_DECODER, ENCODER)
GENERATIVE = frozenset({DECODER, ENCODER_DECODER})
# What a method's ``export`` writes (``MethodSpec.export_format``).
EXPORT_FORMATS = ("prefix", "weights", "peft", "bottleneck", "head")


# One range check of an option: (holds, key under method., value, what is allowed). ``config.validate``
# raises its one-line error for the first that does not hold.
Check = tuple[bool, str, Any, str]

MISSING = "???"  # OmegaConf's mark of a required value: each conf/method/<name>.yaml sets method.name


@dataclass
class MethodOptions:
    """The ``method.*`` keys every method has: the base schema of the ``method`` config group.

    A method family with options of its own declares a subclass next to its code (``PrefixOptions``
    in ``prefix.py``) and names it in its ``MethodSpec(options=...)``; ``config.register_configs``
    stores it in Hydra's ConfigStore as ``method/<schema_name>``, and each ``conf/method/<name>.yaml``
    starts with ``defaults: [<schema_name>, _self_]``, so a key the method does not have, or a value of
    the wrong type, fails at compose time. ``checks`` gives the range checks the types cannot express.
    """

    schema_name: ClassVar[str] = "method_schema"
    name: str = field(default=MISSING, metadata={"help": "the registered method (conf/method/<file>.yaml sets it)"})

    def checks(self, spec: "MethodSpec") -> list[Check]:
        return []


class MethodNotSupportedError(ValueError):
    """The chosen method cannot be applied to the chosen model."""


class UnknownMethodError(MethodNotSupportedError):
    """No method of this name is registered."""


@dataclass(frozen=True)
class MethodSpec:
    """What prefixlab needs to know about one method (``method.name``).

    name: the ``method.name`` of its YAML (``conf/method/<file>.yaml``).
    summary: what trains, as a verb phrase ("trains a task head on a frozen encoder"); error messages use it.
    models: the kinds of model it applies to (``DECODER``, ``ENCODER_DECODER``, ``ENCODER``).
    is_prefix: it trains a prefix encoder (``build_prefix``) on the frozen model, and its LM export is the
        prefix activations (``engine/export.py``); zero-shot evaluation and ``method.init=text`` apply.
    uses_mlp: its prefix is the output of the reparameterization MLP: ``method.mid_dim`` is required.
    mlp_optional: the MLP is a switch: ``method.mid_dim`` set trains through it, null trains the raw form
        (EMB-k); not with ``uses_mlp``.
    target_only: an infix: only the target sees the prefix (exported with placement "infix").
    packable: jobs of it can share one frozen LM (``launcher=packed``): it trains a prefix only.
    uses_bottleneck: it is sized by ``method.bottleneck`` / ``method.adapter_params_percent``
        (``AdapterOptions``; no other schema has them).
    checkpoint_keys: the ``method.*`` keys that decide the shapes of its trainable tensors; a checkpoint
        resumes only if these keys (of every registered method) equal the run's (``training/resume.py``).
    parameter_markers: substrings of the names of the parameters it injects into the LM (not LM
        parameters: ``parameter_counts`` keeps them apart from the LM's).
    prepare_lm(method, lm): makes the LM trainable as the method needs (the LM arrives frozen):
        unfreezes weights or injects adapters. None: the LM stays frozen.
    build_prefix(method, geometry, lm, tokenizer): the trainable prefix encoder (``is_prefix`` only).
    export(module, directory): writes what a user keeps from an LM run (the LightningModule with
        ``hparams.model/method/task_name``, ``prefixed.lm`` and ``exported_prefix()``); returns the folder.
        The encoder path (``training/encoder_module.py``) exports its head (+ prefix) itself.
    export_format: what ``export`` writes: prefix | weights | peft | bottleneck | head.
    options: the schema of its ``method.*`` keys, ``MethodOptions`` or a subclass declared in its module.
    """

    name: str
    summary: str
    models: frozenset[str]
    is_prefix: bool = False
    uses_mlp: bool = False
    mlp_optional: bool = False
    target_only: bool = False
    packable: bool = False
    uses_bottleneck: bool = False
    checkpoint_keys: tuple[str, ...] = ()
    parameter_markers: tuple[str, ...] = ()
    prepare_lm: Callable[[Mapping[str, Any], nn.Module], None] | None = None
    build_prefix: Callable[[Mapping[str, Any], Any, nn.Module, Any], nn.Module] | None = None
    export: Callable[[Any, Path], Path] | None = None
    export_format: str = "weights"
    options: type = MethodOptions

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", frozenset(self.models))
        object.__setattr__(self, "checkpoint_keys", tuple(self.checkpoint_keys))
        object.__setattr__(self, "parameter_markers", tuple(self.parameter_markers))
        problems = []
        if not self.name or not self.name.isidentifier():
            problems.append("name must be a non-empty identifier")
        if not self.models or not self.models <= set(MODEL_KINDS):
            problems.append(f"models must be a non-empty subset of {MODEL_KINDS}")
        if self.export_format not in EXPORT_FORMATS:
            problems.append(f"export_format must be one of {EXPORT_FORMATS}")
        if self.is_prefix != (self.build_prefix is not None):
            problems.append("a prefix method (is_prefix) has a build_prefix, and only a prefix method has one")
        if self.is_prefix != (self.export_format == "prefix"):
            problems.append("a prefix method (is_prefix) exports a prefix (export_format='prefix'), and only a prefix method")
        if (self.uses_mlp or self.mlp_optional or self.target_only or self.packable) and not self.is_prefix:
            problems.append("uses_mlp, mlp_optional, target_only and packable apply to prefix methods (is_prefix) only")
        if self.uses_mlp and self.mlp_optional:
            problems.append("uses_mlp (the MLP is required) and mlp_optional (a switch) exclude each other")
        if "name" in self.checkpoint_keys:
            problems.append("checkpoint_keys: 'name' is always checked; list the method's own keys")
        if not (isinstance(self.options, type) and issubclass(self.options, MethodOptions) and is_dataclass(self.options)):
            problems.append("options must be MethodOptions or a dataclass that extends it")
        elif not set(self.checkpoint_keys) <= set(self.options.__dataclass_fields__):
            problems.append(f"checkpoint_keys must be fields of its options {self.options.__name__}")
        if problems:
            raise ValueError(f"MethodSpec {self.name!r}: " + "; ".join(problems))

    @property
    def exports_prefix(self) -> bool:
        return self.export_format == "prefix"

    @property
    def export_folder(self) -> str:
        """The run folder's child that holds the export: ``prefix`` or ``trained``."""
        return "prefix" if self.exports_prefix else "trained"

    def fits(self, kind: str) -> bool:
        return kind in self.models


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add ``spec`` under ``spec.name`` (registration order is the order of ``method_names``).
    A name registered twice is an error unless ``replace``."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"register_method takes a MethodSpec, not {type(spec).__name__}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"method {spec.name!r} is already registered (pass replace=True to replace it)")
    known = option_schemas().get(spec.options.schema_name, spec.options)
    if known is not spec.options:
        raise ValueError(f"method {spec.name!r}: {spec.options.__name__}.schema_name={spec.options.schema_name!r} "
                         f"is already {known.__name__}'s; give the schema its own name")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_method(name: str) -> MethodSpec:
    """Remove a registered method (tests and plugins that registered their own); returns its spec."""
    return _REGISTRY.pop(get_method(name).name)


def get_method(name: str) -> MethodSpec:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownMethodError(
            f"method.name={name!r} is not a registered method: one of {', '.join(_REGISTRY)}"
        ) from None


def method_names(**where: Any) -> tuple[str, ...]:
    """The registered names in registration order; ``method_names(packable=True)``: those whose
    spec has these attribute values."""
    return tuple(name for name, spec in _REGISTRY.items() if all(getattr(spec, k) == v for k, v in where.items()))


def checkpoint_keys(name: str | None = None) -> tuple[str, ...]:
    """The ``method.*`` keys a checkpoint must share with the run that resumes it: ``name``, then
    method ``name``'s ``checkpoint_keys``; without a name, every registered method's (first
    occurrence, registration order). Each method has only its own schema's keys, so once the names
    agree only that method's keys are worth comparing."""
    keys = ["name"]
    for spec in _REGISTRY.values() if name is None else (get_method(name),):
        keys += [k for k in spec.checkpoint_keys if k not in keys]
    return tuple(keys)


def option_schemas() -> dict[str, type]:
    """Every registered method's options schema by its ``schema_name`` (one per family), with the
    base ``MethodOptions``: what ``config.register_configs`` stores in the ``method`` group."""
    return {MethodOptions.schema_name: MethodOptions, **{s.options.schema_name: s.options for s in _REGISTRY.values()}}


def is_injected_parameter(parameter_name: str) -> bool:
    """A parameter some method injects into the LM (LoRA, (IA)^3, bottleneck adapters), not the LM's own."""
    return any(marker in parameter_name for spec in _REGISTRY.values() for marker in spec.parameter_markers)


# ---- the questions every caller asks ----------------------------------------------------------
def check_method_fits_model(method: Mapping[str, Any], config) -> None:
    """Before any weights load: is this method defined for this architecture?"""
    from prefixlab.engine.families import adapter_for_model_type

    name = method["name"]
    # Every method runs through a prefixed wrapper (it attaches the engine), so every method
    # needs the family's adapter; UnsupportedModelError names the supported model types.
    adapter = adapter_for_model_type(config.model_type)
    spec = get_method(name)
    text_init = method.get("init") == "text"
    if adapter.is_encoder_only:
        if not spec.fits(ENCODER) or text_init:
            what = f"method={name}" if not spec.fits(ENCODER) else "method.init=text"
            raise MethodNotSupportedError(
                f"{what} does not apply to model type {config.model_type!r}, an encoder: use method=prefix, "
                "prefix_flat (P-tuning v2 prefix + task head) or head (the task head alone)"
            )
        unknown = sorted(set(method.get("prefix_sites") or []) - {"encoder_self"})
        if unknown and spec.is_prefix:
            raise MethodNotSupportedError(
                f"method.prefix_sites={list(method['prefix_sites'])}: {unknown} do not exist in a {config.model_type!r} "
                "model; it has ['encoder_self']"
            )
        return
    if not spec.models & GENERATIVE:
        raise MethodNotSupportedError(
            f"method={name} {spec.summary}; {config.model_type!r} is not an encoder "
            "(use an encoder such as model=minilm, or a generative method)"
        )
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    if encoder_decoder and (not spec.fits(ENCODER_DECODER) or text_init):
        what = f"method={name}" if not spec.fits(ENCODER_DECODER) else "method.init=text"
        raise MethodNotSupportedError(
            f"{what} is implemented for decoder-only models; {config.model_type!r} is an encoder-decoder. "
            "Use method=prefix or prefix_flat (with method.prefix_sites), finetune, finetune_topk, lora or ia3"
        )
    if not encoder_decoder and not spec.fits(DECODER):
        raise MethodNotSupportedError(
            f"method={name} is implemented for encoder-decoder models; {config.model_type!r} is decoder-only"
        )
    sites = method.get("prefix_sites")
    if sites and spec.is_prefix:
        allowed = {"decoder_self", "encoder_self", "cross"} if encoder_decoder else {"decoder_self"}
        unknown = sorted(set(sites) - allowed)
        if unknown:
            raise MethodNotSupportedError(
                f"method.prefix_sites={list(sites)}: {unknown} do not exist in a {config.model_type!r} model; it has {sorted(allowed)}"
            )


def unfreeze_for(method: Mapping[str, Any], lm: nn.Module) -> None:
    """Set requires_grad on the LM as the method needs (``prepare_lm``; the LM frozen otherwise)."""
    spec = get_method(method["name"])
    lm.requires_grad_(False)
    if spec.prepare_lm is not None:
        spec.prepare_lm(method, lm)


def build_prefix_encoder(method: Mapping[str, Any], geometry, lm: nn.Module, tokenizer) -> nn.Module:
    """The trainable part of a prefix method, initialized as ``method.init`` says."""
    spec = get_method(method["name"])
    if spec.build_prefix is None:
        raise MethodNotSupportedError(f"method={spec.name} trains no prefix ({spec.summary})")
    return spec.build_prefix(method, geometry, lm, tokenizer)
