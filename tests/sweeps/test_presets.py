"""Sweep presets, launcher and trainer configs, composed as Hydra composes them (no training)."""

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from prefixlab.config import STRATEGIES, ConfigError, TrainConfig, validate
from prefixlab.sweeps.optuna_callbacks import FailedTrialsToOptuna, TrialFailed, check_direction, metric_direction
from prefixlab.cli.train import CONFIG_DIR

from .conftest import run_cli

CONF = Path(CONFIG_DIR)


def composed(*overrides: str, hydra_node: bool = True):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra_node)


def settings(*overrides: str) -> TrainConfig:
    return OmegaConf.to_object(composed(*overrides, hydra_node=False))


@pytest.mark.parametrize("preset, key, grid", [
    ("prefix_length_table_to_text", "method.prefix_length", "1,5,10,20,40"),
    ("prefix_length_summarization", "method.prefix_length", "1,10,20,50,80,100,200,300"),
    ("lr_grid", "optim.lr", "1e-5,5e-5,8e-5"),
])
def test_paper_grids_are_basic_sweeper_params(preset, key, grid):
    cfg = composed(f"hparams_search={preset}")
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    assert OmegaConf.to_container(cfg.hydra.sweeper.params) == {key: grid}
    validate(settings(f"hparams_search={preset}"))


def test_every_preset_and_launcher_file_composes():
    presets = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))
    launchers = sorted(p.stem for p in (CONF / "launcher").glob("*.yaml"))
    assert {"optuna", "lr_grid", "prefix_length_table_to_text", "prefix_length_summarization"} <= set(presets)
    assert {"basic", "joblib", "submitit_local", "submitit_slurm"} <= set(launchers)
    for preset in presets:
        composed(f"hparams_search={preset}")
    targets = {name: composed(f"launcher={name}").hydra.launcher._target_ for name in launchers if name != "packed"}
    assert targets["basic"].endswith("BasicLauncher")
    assert targets["joblib"].endswith("JoblibLauncher")
    assert targets["submitit_local"].endswith("LocalLauncher")
    assert targets["submitit_slurm"].endswith("SlurmLauncher")


def test_optuna_preset_maximizes_the_returned_metric_of_every_task():
    tasks = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
    for task in tasks:
        cfg = composed("hparams_search=optuna", f"task={task}")
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_.endswith("TPESampler")
        assert sweeper.max_failure_rate == 1.0 and "FailedTrialsToOptuna" in cfg.hydra.callbacks.optuna_failed_trials._target_
        # every task's primary metric is a score (higher is better): the preset's direction must say so
        assert metric_direction(cfg.optimized_metric) == "maximize", (task, cfg.optimized_metric)
        assert cfg.optimized_metric == f"val/{cfg.task.primary_metric}", task  # trials are chosen on validation
        check_direction(cfg.optimized_metric, sweeper.direction)
        assert sweeper.sampler.seed == cfg.seed


def test_every_preset_selects_on_a_validation_metric():
    presets = sorted((CONF / "hparams_search").glob("*.yaml"))
    for path in presets:
        cfg = composed(f"hparams_search={path.stem}", "task=e2e")  # every task with optuna: the test above
        assert cfg.optimized_metric == "val/bleu", path.stem
        # no preset sets its own metric, nor says in a comment that it optimizes a test/ one
        assert "optimized_metric:" not in path.read_text() and "test/" not in path.read_text(), path.stem
    # experiments/wandb_sweep.yaml: tests/sweeps/test_wandb_sweep.py


def test_metric_direction_and_a_mismatched_direction_is_refused():
    assert metric_direction("test/rougeL") == metric_direction("test/bleu") == "maximize"
    assert metric_direction("test/zero_shot_exact_match") == "maximize"
    assert metric_direction("val/loss") == "minimize"
    assert metric_direction("test/something_new") is None
    check_direction("test/something_new", "minimize")  # unknown metrics are the user's call
    with pytest.raises(ValueError, match="use hydra.sweeper.direction=maximize"):
        check_direction("test/rougeL", "minimize")
    with pytest.raises(ValueError, match="use hydra.sweeper.direction=minimize"):
        check_direction("val/loss", "Direction.maximize")


def _job_return(value) -> JobReturn:
    ret = JobReturn()
    ret.return_value, ret.status = value, JobStatus.COMPLETED
    return ret


def test_a_nan_result_becomes_a_failed_trial_and_numbers_stay():
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": "/sweep/3"}}})
    callback = FailedTrialsToOptuna()
    nan, number = _job_return(float("nan")), _job_return(0.25)
    callback.on_job_end(config, nan)
    callback.on_job_end(config, number)
    assert nan.status == JobStatus.FAILED
    with pytest.raises(TrialFailed, match="/sweep/3/metrics.json"):
        nan.return_value  # what the Optuna sweeper reads: it tells Optuna the trial FAILED
    assert number.status == JobStatus.COMPLETED and number.return_value == 0.25


def test_the_nan_that_the_callback_handles_does_crash_optuna_without_it():
    """The reason for the callback: optuna 2.10 (pinned below 3 by hydra-optuna-sweeper) refuses
    NaN as a completed value, and the sweeper's fallback (FAIL with values) raises again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    with pytest.raises(ValueError):
        study.tell(trial=trial, state=optuna.trial.TrialState.COMPLETE, values=[math.nan])
    with pytest.raises(ValueError):
        study.tell(trial=trial, state=optuna.trial.TrialState.FAIL, values=[math.nan])


@pytest.mark.cli
def test_a_direction_that_does_not_fit_the_metric_stops_the_study_before_any_trial(tmp_path):
    result = run_cli(["-m", "hparams_search=optuna", "hydra.sweeper.direction=minimize", "model=tiny_random",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, timeout=120)
    assert result.returncode == 1
    assert "hydra.sweeper.direction=minimize does not fit optimized_metric=val/rougeL" in result.stderr
    assert not list((tmp_path / "sweep").glob("*/metrics.json"))  # no trial ran


@pytest.mark.parametrize("trainer, strategy, devices", [("ddp", "ddp", "auto"), ("fsdp", "fsdp", "auto"), ("ddp_cpu", "ddp", "2")])
def test_distributed_trainer_configs(trainer, strategy, devices):
    cfg = composed(f"trainer={trainer}")
    assert cfg.trainer.strategy == strategy and str(cfg.trainer.devices) == devices and cfg.trainer.num_nodes == 1


def test_every_accepted_strategy_is_registered_in_lightning():
    from pytorch_lightning.strategies import StrategyRegistry

    assert set(STRATEGIES) - {"auto"} <= set(StrategyRegistry.available_strategies())


@pytest.mark.parametrize("key, value, message", [
    ("strategy", "dpp", "trainer.strategy='dpp' is out of range"),
    ("num_nodes", 0, "trainer.num_nodes=0 is out of range: must be >= 1"),
])
def test_bad_strategy_or_num_nodes_fail_at_start(key, value, message):
    config = settings("model=tiny_random")
    validate(config)
    setattr(config.trainer, key, value)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_build_trainer_passes_strategy_and_num_nodes(tmp_path):
    from pytorch_lightning.strategies import DDPStrategy

    from prefixlab.run.runs import build_trainer

    trainer = build_trainer(settings("trainer=ddp_cpu").trainer, None, tmp_path)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.world_size == 2 and trainer.num_nodes == 1
    assert trainer.strategy._get_process_group_backend() == "gloo"


def test_optuna_sqlite_storage_works_with_the_pinned_sqlalchemy(tmp_path):
    """hydra.sweeper.storage=sqlite:///... keeps a study across invocations; optuna 2.10 fails on
    SQLAlchemy 2 (an AssertionError in its schema-version check), hence sqlalchemy<2 in pyproject."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for _ in range(2):  # the second invocation loads the first one's trial
        study = optuna.create_study(study_name="s", storage=storage, direction="maximize", load_if_exists=True)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    assert len(study.trials) == 2
