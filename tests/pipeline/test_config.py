"""Typed config: wrong keys, types and ranges fail before any model loads."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from hydra.errors import ConfigCompositionException

from prefixlab.config import ConfigError, TrainConfig, register_configs, validate
from prefixlab.train import CONFIG_DIR


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
        validate(OmegaConf.to_object(compose_train([f"experiment={path.stem}"])))


def test_mid_dim_on_a_method_without_mlp_is_rejected():
    settings = OmegaConf.to_object(compose_train(["method=prefix_flat", "+method.mid_dim=512"]))
    with pytest.raises(ConfigError, match="method.mid_dim=512 .*no reparameterization MLP"):
        validate(settings)


def test_every_method_config_composes_and_validates():
    import pathlib

    for path in sorted(pathlib.Path(CONFIG_DIR, "method").glob("*.yaml")):
        validate(OmegaConf.to_object(compose_train([f"method={path.stem}"])))
