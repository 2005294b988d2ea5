"""The method registry (``prefixlab.methods.registry``): every configured method is registered,
a new method is its own module (here: a toy prefix variant registered by the test, trained
through the real LightningModule), and no code outside ``prefixlab/methods`` compares names."""

from __future__ import annotations

import ast
import copy
import pathlib

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import BartConfig, BertConfig, LlamaConfig

import prefixlab
from prefixlab.cli.train import CONFIG_DIR
from prefixlab.config import ConfigError, register_configs, validate
from prefixlab.engine.export import load_prefix
from prefixlab.engine.parameterization import FlatPrefix
from prefixlab.methods import (
    DECODER, MethodNotSupportedError, MethodSpec, UnknownMethodError, check_method_fits_model, checkpoint_keys,
    get_method, is_injected_parameter, method_names, register_method, unregister_method,
)
from prefixlab.methods.prefix import PrefixOptions, export_prefix, sites_for, text_init_ids
from prefixlab.sweeps.packed import packing_problem
from prefixlab.training.lm_module import PrefixTuningModule

from tests.pipeline.helpers import GENERATION, OPTIM, PREFIX_METHOD, TINY_MODEL
from training.test_training_invariants import _datamodule, _trainer

SRC = pathlib.Path(prefixlab.__file__).resolve().parent


def compose_train(overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


# ---- what is registered ------------------------------------------------------------------------
def test_every_method_yaml_names_a_registered_method():
    files = sorted(pathlib.Path(CONFIG_DIR, "method").glob("*.yaml"))
    assert len(files) >= 10
    names = {compose_train([f"method={path.stem}"]).method.name for path in files}
    assert names <= set(method_names()), sorted(names - set(method_names()))
    # ...and every registered method has a YAML that selects it
    assert set(method_names()) == names


def test_the_registry_answers_what_the_name_checks_used_to():
    assert method_names() == ("prefix", "prefix_flat", "infix", "embedding", "finetune", "finetune_topk", "lora", "ia3",
                              "adapter", "head")
    assert method_names(is_prefix=True) == ("prefix", "prefix_flat", "infix", "embedding")
    assert method_names(packable=True) == ("prefix", "prefix_flat", "infix", "embedding")
    assert method_names(uses_mlp=True) == ("prefix", "infix")
    assert method_names(target_only=True) == ("infix",)
    assert method_names(uses_bottleneck=True) == ("adapter",)
    assert {n for n in method_names() if get_method(n).fits("encoder")} == {"prefix", "prefix_flat", "head"}
    assert {n for n in method_names() if not get_method(n).fits("encoder-decoder")} == {"infix", "embedding", "adapter", "head"}
    assert {n: get_method(n).export_format for n in ("prefix", "finetune", "lora", "adapter", "head")} == {
        "prefix": "prefix", "finetune": "weights", "lora": "peft", "adapter": "bottleneck", "head": "head"}
    assert [get_method(n).export_folder for n in ("embedding", "finetune_topk", "head")] == ["prefix", "trained", "trained"]
    # the keys training/resume.py compares, as before the registry (order decides which one is reported)
    assert checkpoint_keys() == ("name", "prefix_length", "prefix_sites", "mid_dim", "mlp_layers", "k", "lora_r",
                                 "target_modules")
    assert is_injected_parameter("model.layers.0.self_attn.q_proj.lora_A.default.weight")
    assert is_injected_parameter("model.layers.0.mlp.down_proj.ia3_l.default")
    assert is_injected_parameter("model.layers.1.mlp.bottleneck_adapter.up.weight")
    assert not is_injected_parameter("model.layers.1.mlp.down_proj.weight")


def test_unknown_names_and_bad_specs_are_refused():
    with pytest.raises(UnknownMethodError, match="method.name='nope' is not a registered method: one of prefix, "):
        get_method("nope")
    assert issubclass(UnknownMethodError, MethodNotSupportedError)  # a user error: one line, no traceback
    with pytest.raises(ValueError, match="already registered"):
        register_method(get_method("prefix"))
    with pytest.raises(ValueError, match="has a build_prefix"):
        MethodSpec(name="broken", summary="", models={DECODER}, is_prefix=True, export_format="prefix")
    with pytest.raises(ValueError, match="packable apply to prefix methods"):
        MethodSpec(name="broken", summary="", models={DECODER}, packable=True)
    with pytest.raises(ValueError, match="models must be"):
        MethodSpec(name="broken", summary="", models={"rnn"})
    with pytest.raises(ConfigError, match="method.name='nope' is out of range: one of prefix, prefix_flat, infix"):
        validate(OmegaConf.to_object(compose_train(["method.name=nope"])))


# ---- a new method is its own module: a toy prefix variant ---------------------------------------
def build_small_flat_prefix(method, geometry, lm, tokenizer):
    """prefix_flat with another init: std 1e-3 whatever method.init_std says."""
    encoder = FlatPrefix(sites_for(geometry, method.get("prefix_sites")), method["prefix_length"], init_std=1e-3)
    assert text_init_ids(method, tokenizer) is None
    return encoder


TOY = MethodSpec(
    name="toy_small_prefix", summary="trains a flat prefix started near zero", models=frozenset({DECODER}),
    is_prefix=True, packable=True, checkpoint_keys=("prefix_length",), build_prefix=build_small_flat_prefix,
    export=export_prefix, export_format="prefix", options=PrefixOptions,  # the prefix family's keys
)


@pytest.fixture
def toy():
    register_method(TOY)
    try:
        yield TOY
    finally:
        unregister_method(TOY.name)
    assert TOY.name not in method_names()


def test_a_registered_toy_method_validates_fits_packs_and_trains_one_step(tmp_path, toy):
    settings = OmegaConf.to_object(compose_train(["method=prefix_flat", f"method.name={toy.name}", "model=tiny_random"]))
    validate(settings)
    assert packing_problem(settings) is None
    check_method_fits_model({**PREFIX_METHOD, "name": toy.name}, LlamaConfig())
    with pytest.raises(MethodNotSupportedError, match=f"method={toy.name} is implemented for decoder-only models"):
        check_method_fits_model({**PREFIX_METHOD, "name": toy.name}, BartConfig())
    with pytest.raises(MethodNotSupportedError, match=f"method={toy.name} does not apply to model type 'bert'"):
        check_method_fits_model({**PREFIX_METHOD, "name": toy.name}, BertConfig())

    pl.seed_everything(0)
    method = {**PREFIX_METHOD, "name": toy.name, "mid_dim": None}
    module = PrefixTuningModule(model=TINY_MODEL, method=method, optim=OPTIM, generation=GENERATION,
                                task_name="bbc_headline", max_steps=1)
    assert module.is_prefix_method and isinstance(module.prefixed.prefix_encoder, FlatPrefix)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("prefixed.prefix_encoder.") for n in trainable)
    start = {n: p.detach().clone() for n, p in module.named_parameters()}
    assert max(start[n].abs().max().item() for n in trainable) < 0.01  # its own init, not prefix_flat's std 0.02
    lm_before = copy.deepcopy(module.prefixed.lm.state_dict())
    _trainer(tmp_path, steps=1).fit(module, datamodule=_datamodule())
    assert module.global_step == 1
    assert any(not torch.equal(p, start[n]) for n, p in module.named_parameters() if n in trainable)
    assert all(torch.equal(v, lm_before[k]) for k, v in module.prefixed.lm.state_dict().items())
    exported = load_prefix(module.export(tmp_path / "prefix"))
    assert exported.method == toy.name and exported.prefix_length == method["prefix_length"]
    assert exported.metadata["placement"] == "prefix"


# ---- nothing outside prefixlab/methods compares method names -------------------------------------
# Comparisons with a registered name that are not about methods: (file, source of the comparison) -> why.
NOT_METHOD_NAMES = {
    ("cli/convert.py", "exported.metadata.get('placement') == 'infix'"): "an exported prefix's placement (metadata)",
    ("cli/generate.py", "exported.metadata.get('placement') == 'infix'"): "an exported prefix's placement (metadata)",
    ("training/evaluation.py", "exported.metadata.get('placement') == 'infix'"): "an exported prefix's placement (metadata)",
}


def name_checks(source: str, names: set[str]) -> dict[int, str]:
    """The comparisons in ``source`` against a method-name literal (==, !=, in, not in a literal
    collection, match/case), and the literal collections holding two or more method names (a
    copy of a method list or a dispatch table): {line number: the expression}, one per line."""
    found: dict[int, str] = {}

    def literal_names(node) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value} & names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*(literal_names(e) for e in node.elts)) if node.elts else set()
        if isinstance(node, ast.Starred):
            return literal_names(node.value)
        return set()

    def method_list(node) -> bool:  # a module's own list of names: X in PREFIX_METHODS, m.PEFT_METHODS
        identifier = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        return identifier == "METHODS" or identifier.endswith("_METHODS")

    for node in ast.walk(ast.parse(source)):  # breadth first: a comparison before the tuple inside it
        if isinstance(node, ast.Compare) and any(literal_names(o) or method_list(o) for o in (node.left, *node.comparators)):
            found.setdefault(node.lineno, ast.unparse(node))
        elif isinstance(node, ast.MatchValue) and literal_names(node.value):
            found.setdefault(node.lineno, f"case {ast.unparse(node.value)}")
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(literal_names(node)) >= 2:
            found.setdefault(node.lineno, ast.unparse(node))
        elif isinstance(node, ast.Dict) and len(set().union(set(), *(literal_names(k) for k in node.keys if k))) >= 2:
            found.setdefault(node.lineno, ast.unparse(node))
    return found


def test_the_name_scanner_finds_name_checks():
    names = set(method_names())
    bad = '''
if method["name"] == "infix": pass
if settings.method.name in ("prefix", "prefix_flat"): pass
if name != 'adapter': pass
PACKABLE = ["prefix", "embedding"]
HANDLERS = {"lora": 1, "ia3": 2}
match name:
    case "head": pass
if spec.name in PEFT_METHODS or x not in methods.PACKABLE_METHODS: pass
'''
    assert sorted(name_checks(bad, names)) == [2, 3, 4, 5, 6, 8, 9]
    assert name_checks(bad, names)[3] == "settings.method.name in ('prefix', 'prefix_flat')"
    fine = 'if method["name"] in method_names(is_prefix=True): pass\nx = {"name": "prefix"}\nif kind == "span": pass\n'
    assert name_checks(fine, names) == {}


def test_no_module_outside_methods_compares_method_names():
    names = set(method_names())
    roots = [SRC, SRC.parent / "hydra_plugins"]
    files = [p for root in roots if root.is_dir() for p in sorted(root.rglob("*.py"))
             if (SRC / "methods") not in p.parents]
    assert len(files) > 30 and any(p.name == "lm_module.py" for p in files)
    offenders = []
    for path in files:
        relative = path.relative_to(SRC).as_posix() if SRC in path.parents else path.as_posix()
        for line, check in name_checks(path.read_text(), names).items():
            if (relative, check) not in NOT_METHOD_NAMES:
                offenders.append(f"{relative}:{line}: {check}")
    assert not offenders, "ask the method registry (prefixlab.methods.get_method) instead:\n" + "\n".join(offenders)
