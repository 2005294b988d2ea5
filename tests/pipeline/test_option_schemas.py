"""Per-method and per-task option schemas (issue 17): each conf/method and conf/task option composes
to the schema its module declares, and a key that option does not have fails at compose time."""

import dataclasses
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from prefixlab.cli.train import CONFIG_DIR
from prefixlab.config import ConfigError, register_configs, validate
from prefixlab.methods import (
    DECODER, MethodOptions, MethodSpec, checkpoint_keys, get_method, register_method, unregister_method,
)
from prefixlab.methods.finetune import TopLayersOptions
from prefixlab.methods.prefix import PrefixOptions, build_flat_prefix, export_prefix
from prefixlab.tasks import TASKS, TaskOptions, task_options

METHOD_FILES = sorted(p.stem for p in Path(CONFIG_DIR, "method").glob("*.yaml"))
TASK_FILES = sorted(p.stem for p in Path(CONFIG_DIR, "task").glob("*.yaml"))


def settings(*overrides: str, config_dir: str = CONFIG_DIR):
    register_configs()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="train", overrides=list(overrides)))


def composition_error(*overrides: str) -> str:
    with pytest.raises(ConfigCompositionException) as info:
        settings(*overrides)
    return f"{info.value} {info.value.__cause__}"


@pytest.mark.parametrize("option", METHOD_FILES)
def test_each_method_option_composes_to_its_own_schema(option):
    composed = settings(f"method={option}")
    assert type(composed.method) is get_method(composed.method.name).options
    validate(composed)


@pytest.mark.parametrize("option", TASK_FILES)
def test_each_task_option_composes_to_its_own_schema(option):
    composed = settings(f"task={option}")
    assert composed.task.name == option and type(composed.task) is TASKS[option].options
    validate(composed)
    # what reaches the task's constructor: its own keys only, and the constructor takes them all
    assert set(task_options(composed.task)) == {f.name for f in dataclasses.fields(TASKS[option].options)} - {
        f.name for f in dataclasses.fields(TaskOptions)}


def test_the_schemas_hold_only_their_own_keys():
    assert "k" not in {f.name for f in dataclasses.fields(PrefixOptions)}
    assert {f.name for f in dataclasses.fields(TopLayersOptions)} == {"name", "k", "train_tied_embedding"}
    assert [f.name for f in dataclasses.fields(MethodOptions)] == ["name"]
    assert type(settings("method=finetune").method) is MethodOptions  # finetune has no options of its own


@pytest.mark.parametrize("overrides, key, schema", [
    (["method.k=3"], "k", "PrefixOptions"),  # finetune_topk's key, the default method is prefix
    (["method=finetune", "method.prefix_length=5"], "prefix_length", "MethodOptions"),
    (["method=ia3", "method.lora_r=4"], "lora_r", "IA3Options"),
    (["method=lora", "method.bottleneck=8"], "bottleneck", "LoRAOptions"),
    (["task=e2e", "task.train_topics=[tech]"], "train_topics", "TableToTextOptions"),  # bbc_headline's key
    (["task=webnlg", "task.split_seed=1"], "split_seed", "WebNLGOptions"),
    (["task.data_dir=/tmp"], "data_dir", "BBCHeadlineOptions"),
])
def test_a_key_of_another_option_is_refused_at_compose_time_naming_it_and_the_schema(overrides, key, schema):
    message = composition_error(*overrides)
    assert f"Key '{key}' not in '{schema}'" in message, message


def test_a_misspelt_key_is_refused_naming_it_and_the_schema():
    message = composition_error("method=prefix_flat", "method.prefix_lenght=5")
    assert "Key 'prefix_lenght' not in 'PrefixOptions'" in message, message
    message = composition_error("task=local", "task.train_flie=a.jsonl")
    assert "Key 'train_flie' not in 'LocalFilesOptions'" in message, message


@pytest.mark.parametrize("overrides, key", [
    (["method=finetune_topk", "method.k=two"], "method.k"),
    (["method=lora", "method.target_modules=q_proj"], "method.target_modules"),
    (["task=country_qa", "task.split_seed=x"], "task.split_seed"),
])
def test_a_wrong_type_still_fails_typed(overrides, key):
    message = composition_error(*overrides)
    assert key in message, message


def test_an_appended_key_the_schema_lacks_is_one_config_error():
    # Hydra suggests "+method.k=3" for a key the schema lacks; nothing would read it: refused, not ignored
    with pytest.raises(ConfigError, match=r"^method.k=3 is not a key of method=prefix \(schema PrefixOptions\); "
                                          r"its keys: name, prefix_length"):
        validate(settings("+method.k=3"))
    with pytest.raises(ConfigError, match=r"^task.bogus=1 is not a key of task=e2e \(schema TableToTextOptions\)"):
        validate(settings("task=e2e", "+task.bogus=1"))


def test_a_name_of_another_family_under_a_schema_is_refused():
    with pytest.raises(ConfigError, match=r"method.name='finetune_topk' is out of range: its options schema is "
                                          r"TopLayersOptions .* start its conf/method/ file with defaults: "
                                          r"\[finetune_topk_schema, _self_\]"):
        validate(settings("method.name=finetune_topk"))
    with pytest.raises(ConfigError, match=r"task.name='webnlg' .* its options schema is WebNLGOptions"):
        validate(settings("task=e2e", "task.name=webnlg"))


@pytest.mark.parametrize("overrides, message", [
    (["method=finetune_topk", "method.k=0"], "method.k=0 is out of range: must be >= 1"),
    (["method=lora", "method.lora_r=0"], "method.lora_r=0 is out of range: must be >= 1"),
    (["method=lora", "method.dropout=1.0"], "method.dropout=1.0 is out of range: must be in [0, 1)"),
    (["method=adapter", "method.init_std=0"], "method.init_std=0.0 is out of range: must be > 0"),
    (["task=webnlg", "task.test_categories=some"], "task.test_categories='some' is out of range: all | seen | unseen"),
    (["task=local", "task.file_format=xml"], "task.file_format='xml' is out of range: csv | jsonl, or null"),
])
def test_each_schema_checks_its_own_ranges(overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(settings(*overrides))
    assert str(info.value).startswith(message), info.value


def test_run_name_works_for_methods_without_a_prefix_length():
    assert settings().run_name == "bbc_headline-prefix-L10"
    assert settings("method=finetune", "task=e2e").run_name == "e2e-finetune-L0"


def test_a_checkpoint_compares_only_its_own_methods_keys():
    assert checkpoint_keys("finetune_topk") == ("name", "k")
    assert checkpoint_keys("prefix") == ("name", "prefix_length", "prefix_sites", "mid_dim", "mlp_layers")
    assert checkpoint_keys("finetune") == ("name",)
    assert {"k", "lora_r", "prefix_length"} <= set(checkpoint_keys())  # every method's, as before


def test_a_schema_name_is_one_schema():
    @dataclasses.dataclass
    class Clash(MethodOptions):
        schema_name = "prefix_schema"  # PrefixOptions' name

    with pytest.raises(ValueError, match="schema_name='prefix_schema' is already PrefixOptions's"):
        register_method(MethodSpec(name="clash", summary="-", models={DECODER}, options=Clash))
    with pytest.raises(ValueError, match="checkpoint_keys must be fields of its options"):
        MethodSpec(name="bad_keys", summary="-", models={DECODER}, checkpoint_keys=("k",))


@dataclasses.dataclass
class ScaledFlatOptions(MethodOptions):
    """A newcomer's method: declared in its own module (here, this test), with its own key."""

    schema_name = "scaled_flat_schema"
    prefix_length: int = 4
    init_std: float = 0.02
    scale: float = 1.0

    def checks(self, spec):
        return [(self.scale > 0, "scale", self.scale, "must be > 0")]


def test_a_new_method_is_its_module_and_its_yaml(tmp_path):
    """Nothing in config.py or elsewhere changes: its MethodSpec names its schema, its YAML lists it."""
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    (conf / "method" / "scaled_flat.yaml").write_text(
        "defaults:\n  - scaled_flat_schema\n  - _self_\nname: scaled_flat\nprefix_length: 6\nscale: 0.5\n")
    register_method(MethodSpec(
        name="scaled_flat", summary="trains a scaled flat prefix", models={DECODER}, is_prefix=True,
        checkpoint_keys=("prefix_length",), build_prefix=build_flat_prefix, export=export_prefix,
        export_format="prefix", options=ScaledFlatOptions,
    ))
    try:
        composed = settings("method=scaled_flat", config_dir=str(conf))
        assert composed.method == ScaledFlatOptions(name="scaled_flat", prefix_length=6, scale=0.5)
        validate(composed)
        assert composed.run_name == "bbc_headline-scaled_flat-L6"
        with pytest.raises(ConfigError, match=r"method.scale=-1.0 is out of range: must be > 0"):
            validate(settings("method=scaled_flat", "method.scale=-1", config_dir=str(conf)))
        with pytest.raises(ConfigCompositionException) as info:
            settings("method=scaled_flat", "method.mid_dim=8", config_dir=str(conf))
        assert "Key 'mid_dim' not in 'ScaledFlatOptions'" in str(info.value.__cause__)
    finally:
        unregister_method("scaled_flat")
