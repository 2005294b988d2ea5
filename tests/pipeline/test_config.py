"""Typed config: wrong keys, types and ranges fail before any model loads."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from hydra.errors import ConfigCompositionException

from prefixlab.config import ConfigError, TrainConfig, register_configs, validate
from prefixlab.cli.train import CONFIG_DIR


def compose_train(overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_default_config_composes_to_the_embedded_default():
    cfg = compose_train([])
    settings = OmegaConf.to_object(cfg)
    assert isinstance(settings, TrainConfig)
    assert settings.model.name_or_path == "embedded:smollm2-135m-instruct"
    assert settings.method.name == "prefix" and settings.method.prefix_length == 10 and settings.method.mid_dim == 512
    assert settings.task.name == "bbc_headline"
    validate(settings)


def test_misspelt_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as info:
        compose_train(["method.prefix_lenght=3"])
    assert "prefix_lenght" in str(info.value.__cause__ or info.value)


def test_wrong_type_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as info:
        compose_train(["method.prefix_length=ten"])
    assert "prefix_length" in str(info.value.__cause__ or info.value)


def test_unknown_method_or_task_names_the_available_options():
    for override, group in (["method=nope", "method"], ["task=nope", "task"]):
        with pytest.raises(Exception) as info:
            compose_train([override])
        message = str(info.value)
        assert f"Could not find '{group}/nope'" in message


@pytest.mark.parametrize(
    "override, key",
    [
        ("method.prefix_length=0", "method.prefix_length"),
        ("method.prefix_length=-3", "method.prefix_length"),
        ("optim.lr=0", "optim.lr"),
        ("task.batch_size=0", "task.batch_size"),
        ("method.dropout=1.5", "method.dropout"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("method.name=adapterz", "method.name"),
        ("method.mid_dim=0", "method.mid_dim"),
        ("method.init=text", "method.init_text"),
        ("task.name=nope", "task.name"),
    ],
)
def test_out_of_range_values_name_key_and_value(override, key):
    settings = OmegaConf.to_object(compose_train([override]))
    with pytest.raises(ConfigError) as info:
        validate(settings)
    assert key in str(info.value)
    assert override.split("=")[1] in str(info.value)


def test_every_experiment_file_composes():
    import pathlib

    for path in sorted(pathlib.Path(CONFIG_DIR, "experiment").glob("*.yaml")):
        settings = OmegaConf.to_object(compose_train([f"experiment={path.stem}"]))
        validate(settings)
        assert settings.optimized_metric == f"val/{settings.task.primary_metric}", path.stem  # validation selects


def test_mid_dim_on_a_method_without_mlp_is_rejected():
    settings = OmegaConf.to_object(compose_train(["method=prefix_flat", "method.mid_dim=512"]))
    with pytest.raises(ConfigError, match="method.mid_dim=512 .*no reparameterization MLP"):
        validate(settings)


def test_every_method_config_composes_and_validates():
    import pathlib

    for path in sorted(pathlib.Path(CONFIG_DIR, "method").glob("*.yaml")):
        validate(OmegaConf.to_object(compose_train([f"method={path.stem}"])))


# ---- select on validation, report on test ------------------------------------------------------
DEFAULT_VAL_SIZES = {"bbc_headline": 100, "e2e": 100, "dart": 100, "webnlg": 100, "local": 100, "xsum": 32,
                     "cnn_dailymail": 32, "bbc_topic": 100, "ag_news": 200, "sst2": 200, "country_qa": 48,
                     "country_qa_extractive": 48, "squad": 200}


def test_the_default_optimized_metric_is_the_tasks_validation_metric(capsys):
    register_configs()
    primaries = {"bbc_headline": "rougeL", "e2e": "bleu", "country_qa": "exact_match"}  # every task: tests/sweeps
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        composed = {task: OmegaConf.to_object(compose(config_name="train", overrides=[f"task={task}"])) for task in primaries}
    assert {task: s.optimized_metric for task, s in composed.items()} == {t: f"val/{m}" for t, m in primaries.items()}
    for settings in composed.values():
        validate(settings)
    assert capsys.readouterr().err == ""  # no warning by default


def test_default_val_sizes_are_large_enough_to_select_on():
    import pathlib

    import yaml

    found = {}
    for path in sorted(pathlib.Path(CONFIG_DIR, "task").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        found[path.stem] = data.get("task", data)["val_size"]  # bbc_headline.yaml is the task node itself
    assert found == DEFAULT_VAL_SIZES
    assert TrainConfig().task.val_size == DEFAULT_VAL_SIZES["bbc_headline"]  # the schema default is the default task's


def test_a_typed_test_metric_is_allowed_and_warns_once(monkeypatch, capsys):
    import prefixlab.config as config

    monkeypatch.setattr(config, "_WARNED_TEST_SELECTION", set())  # as in a fresh process
    settings = OmegaConf.to_object(compose_train(["task=e2e", "optimized_metric=test/bleu"]))
    assert settings.optimized_metric == "test/bleu"
    for _ in range(3):  # a sweep validates every job in one process (train, train_packed): one line for all
        validate(settings)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("prefixlab-train: warning: optimized_metric=test/bleu chooses hyperparameters by a test metric")
    assert "inflates the reported best" in err and "val/bleu" in err


@pytest.mark.parametrize("metric", ["bleu", "train/loss", "val/", "validation/bleu"])
def test_an_optimized_metric_that_metrics_json_cannot_hold_is_refused(metric):
    settings = OmegaConf.to_object(compose_train([f"optimized_metric={metric}"]))
    with pytest.raises(ConfigError, match=f"optimized_metric='{metric}' is out of range: val/<metric>"):
        validate(settings)
