"""Loggers (issue 18): CSV, TensorBoard, MLflow and W&B, alone or several at once, each read back
with its own library's reader after a real in-process run of `train` on the tiny model; W&B's mode
chosen as W&B would; a resumed run continues the same W&B and MLflow runs; online W&B without
credentials is one line, before any model loads."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from prefixlab.cli.train import CONFIG_DIR, train
from prefixlab.config import ConfigError, register_configs, validate
from prefixlab.errors import USER_ERRORS
from prefixlab.run import loggers
from prefixlab.run.loggers import LoggerSetupError, check_loggers, decide_wandb_mode
from prefixlab.sweeps.jobs import read_wandb_run, wandb_records

from pipeline.helpers import EVAL_CLI, TINY_CLI

# MLflow probes the system with processes (`uname -p`, `git version`) when first imported: here, at
# collection, not inside a test (conftest refuses processes in tests that are not `cli`)
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.tracking.context import git_context  # noqa: E402

RUN = [*TINY_CLI, "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", "logger.samples_rows=3",
       "eval_zero_shot=false"]


def compose_run(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[*RUN, *overrides])


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    """No W&B credentials and no settings: the mode W&B would pick is offline."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(loggers, "wandb_settings_mode", lambda: None)
    # W&B's settings, when first built in a process, run `git rev-parse` to find the code's repository
    # (conftest refuses processes outside `cli` tests): whether they were already built depended on
    # the tests run before, so a test run alone failed
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")


@pytest.fixture
def quiet_mlflow(monkeypatch):
    """MLflow without its side trips: no usage telemetry, and no `git` process for the source-commit
    tags of a run (tests start no processes outside `cli` tests)."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setattr(git_context, "_resolve_git_info", lambda: {})


def wandb_runs(run_dir: Path) -> list[tuple[Path, dict]]:
    """Each offline run folder with its transaction log read back (and the run id of its run record)."""
    runs = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        log = next(folder.glob("run-*.wandb"))
        run_id = next(r.run.run_id for r in wandb_records(log) if r.WhichOneof("record_type") == "run")
        runs.append((folder, {**read_wandb_run(log), "id": run_id}))
    return runs


def mlflow_client(run_dir: Path):
    return MlflowClient(f"sqlite:///{run_dir.resolve() / 'mlflow' / 'mlflow.db'}")


def mlflow_only_run(client):
    experiment = client.get_experiment_by_name("prefixlab")
    (run,) = client.search_runs([experiment.experiment_id])
    return run


def csv_losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r["train/loss"]}


def csv_steps(run_dir: Path, key: str) -> list[int]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [int(r["step"]) for r in csv.DictReader(handle) if r.get(key)]


def markdown_row(values) -> str:
    """One row of a samples table as TensorBoard's text shows it: pipes escaped, newlines as <br>."""
    return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", "<br>") for v in values) + " |"


def sample_rows(run_dir: Path, rows: int = 3) -> list[list[str]]:
    """The test samples table as the loggers get it: the first rows of predictions.jsonl."""
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return [[p["id"], p["input"], p["prediction"], "\n".join(p["references"])] for p in predictions[:rows]]


def tensorboard_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()


def test_csv_tensorboard_and_mlflow_at_once_get_the_config_the_same_per_step_metrics_and_the_samples(tmp_path, quiet_mlflow):
    run_dir = tmp_path / "run"
    metrics = train(compose_run("logger=[csv,tensorboard,mlflow]", "logger.tags=[mine]"), run_dir)
    assert metrics["status"] == "completed"
    test_rows = sample_rows(run_dir)

    # CSV: the reference the others are compared with
    losses = csv_losses(run_dir)
    assert sorted(losses) == [0, 1, 2]
    assert yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())["method"]["prefix_length"] == 4

    # TensorBoard: scalars per step, the config in the HParams plugin and as text, samples as text
    events = tensorboard_events(run_dir)
    assert {e.step: e.value for e in events.Scalars("train/loss")} == pytest.approx(losses, rel=1e-6)
    val_steps = csv_steps(run_dir, "val/rougeL")
    assert len(val_steps) == 2  # in fit (val_check_interval=2), then trainer.validate
    assert [e.step for e in events.Scalars("val/rougeL")] == val_steps
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams = plugin_data_pb2.HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    values = hparams.session_start_info.hparams
    assert values["method/prefix_length"].number_value == 4 and values["optimized_metric"].string_value == "val/rougeL"
    assert values["parameters/trainable_params"].number_value == metrics["trainable_params"]
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "    method:\n      name: prefix\n      prefix_length: 4\n" in config_text  # a code block of the resolved config
    (test_text,) = events.Tensors("test/samples/text_summary")
    table = test_text.tensor_proto.string_val[0].decode().splitlines()
    assert table[0] == "| id | input | prediction | references |" and len(table) == 2 + 3
    assert table[2] == markdown_row(test_rows[0])
    assert [t.step for t in events.Tensors("val/samples/text_summary")] == [2, 3]

    # MLflow: one run in the run folder's SQLite store, finished, with params, metrics and tables
    client = mlflow_client(run_dir)
    run = mlflow_only_run(client)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
    assert run.data.tags["mlflow.runName"] == metrics["run_name"] == run.data.tags["group"]
    assert run.data.tags["method"] == "prefix" and run.data.tags["task"] == "bbc_headline" and run.data.tags["mine"] == ""
    assert run.data.params["method/prefix_length"] == "4" and run.data.params["optimized_metric"] == "val/rougeL"
    assert run.data.params["parameters/trainable_params"] == str(metrics["trainable_params"])
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert history == pytest.approx(losses, rel=1e-6)
    assert run.data.metrics["test/rougeL"] == pytest.approx(metrics["test/rougeL"])
    folder = Path(client.download_artifacts(run.info.run_id, "test", str(tmp_path / "artifacts")))
    stored = json.loads((folder / "samples-step3.json").read_text())
    assert stored["columns"] == ["id", "input", "prediction", "references"] and stored["data"] == test_rows
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id, "val")) == ["val/samples-step2.json", "val/samples-step3.json"]
    assert (run_dir / "mlflow" / "artifacts").is_dir()  # beside the store, not ./mlruns of the working folder


def test_prefixlab_eval_logs_the_samples_table_of_its_split(tmp_path):
    """prefixlab-eval's loggers get the split's samples table, as a training run's do (they got
    only the metrics)."""
    from prefixlab.cli.evaluate import CONFIG_DIR as EVAL_CONFIG_DIR, evaluate

    with initialize_config_dir(config_dir=EVAL_CONFIG_DIR, version_base="1.3"):  # the bare tiny model, zero-shot
        cfg = compose(config_name="eval", overrides=[*EVAL_CLI, "logger=[csv,tensorboard]", "logger.samples_rows=3"])
    run_dir = tmp_path / "eval"
    assert evaluate(cfg, run_dir)["status"] == "completed"
    events = tensorboard_events(run_dir)
    (test_text,) = events.Tensors("test/samples/text_summary")
    table = test_text.tensor_proto.string_val[0].decode().splitlines()
    assert table[0] == "| id | input | prediction | references |" and len(table) == 2 + 3
    assert table[2] == markdown_row(sample_rows(run_dir)[0])
    assert "val/samples/text_summary" not in events.Tags()["tensors"]  # the test split only was evaluated


@pytest.mark.cli  # W&B runs its own service process (wandb-core), even offline
def test_wandb_beside_the_others_gets_the_same_metrics_the_config_and_the_samples(tmp_path, offline_wandb, quiet_mlflow):
    run_dir = tmp_path / "run"
    metrics = train(compose_run("logger=[csv,tensorboard,mlflow,wandb]"), run_dir)
    import wandb

    wandb.teardown()  # run.finish() returns before W&B's service has written the run's last records
    losses = csv_losses(run_dir)
    ((folder, run),) = wandb_runs(run_dir)
    assert run["config"]["method"]["prefix_length"] == 4 and run["config"]["parameters"]["trainable_params"] == metrics["trainable_params"]
    assert run["exit_code"] == 0 and run["summary"]["status"] == "completed"
    assert run["summary"]["test/rougeL"] == metrics["test/rougeL"]
    wandb_losses = {r["trainer/global_step"]: r["train/loss"] for r in run["history"] if "train/loss" in r}
    assert wandb_losses == pytest.approx(losses, rel=1e-6)
    (table,) = [r["test/samples"] for r in run["history"] if "test/samples" in r]
    assert json.loads((folder / "files" / table["path"]).read_text())["data"] == sample_rows(run_dir)
    # the same numbers reached the other loggers of the same run
    assert {e.step: e.value for e in tensorboard_events(run_dir).Scalars("train/loss")} == pytest.approx(losses, rel=1e-6)
    client = mlflow_client(run_dir)
    assert len(client.get_metric_history(mlflow_only_run(client).info.run_id, "train/loss")) == 3
    assert json.loads((run_dir / "logger_runs.json").read_text())["wandb"] == run["id"]


def test_one_logger_alone_writes_only_its_own(tmp_path, offline_wandb):
    run_dir = tmp_path / "run"
    train(compose_run("logger=tensorboard", "trainer.max_steps=2", "trainer.val_check_interval=null"), run_dir)
    assert (run_dir / "tensorboard").is_dir()
    assert not any((run_dir / name).exists() for name in ("csv", "mlflow", "wandb"))
    assert [e.step for e in tensorboard_events(run_dir).Scalars("train/loss")] == [0, 1]


@pytest.mark.cli  # W&B's service process
def test_resume_continues_the_same_wandb_and_mlflow_runs(tmp_path, offline_wandb, quiet_mlflow):
    run_dir = tmp_path / "run"
    first = ["logger=[mlflow,wandb]", "trainer.max_steps=2", "trainer.val_check_interval=null", "logger.samples_rows=0"]
    train(compose_run(*first), run_dir)
    train(compose_run(*first[:-3], "trainer.max_steps=4", "trainer.val_check_interval=null", "logger.samples_rows=0",
                      "resume=auto", "resume_allow_changes=[trainer.max_steps]"), run_dir)
    (_, before), (_, after) = wandb_runs(run_dir)
    assert before["id"] == after["id"]  # `wandb sync` appends the second offline folder to the same run
    assert [r["trainer/global_step"] for r in after["history"] if "train/loss" in r] == [2, 3]
    client = mlflow_client(run_dir)
    run = mlflow_only_run(client)  # one run, not two
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1, 2, 3]
    assert run.info.status == "FINISHED"
    # MLflow keeps a parameter's first value (it refuses changes); metrics.json has the change
    assert run.data.params["trainer/max_steps"] == "2"


def test_a_sweep_shares_one_mlflow_store_in_the_sweep_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from prefixlab.config import LoggerConfig

    sweep = tmp_path / "multirun" / "12-00"
    uri, artifacts = loggers.mlflow_store(LoggerConfig(mlflow=True), sweep / "0", str(sweep))
    assert uri == f"sqlite:///{sweep.resolve()}/mlflow/mlflow.db" and artifacts == (sweep.resolve() / "mlflow" / "artifacts").as_uri()
    given = LoggerConfig(mlflow=True, tracking_uri=f"sqlite:///{tmp_path}/mine/runs.db")
    assert loggers.mlflow_store(given, sweep / "0", str(sweep)) == (given.tracking_uri, (tmp_path / "mine" / "artifacts").as_uri())
    assert loggers.mlflow_store(LoggerConfig(mlflow=True, tracking_uri="http://host:5000"), sweep / "0", None) == ("http://host:5000", None)


@pytest.mark.parametrize("asked, env, settings, credentials, expected", [
    (None, None, None, False, "offline"),      # nothing known: never prompt, log locally
    (None, None, None, True, "online"),        # `wandb login` done: online, as wandb.init would be
    (None, None, "offline", True, "offline"),  # `wandb offline` in this folder
    (None, "offline", None, True, "offline"),  # WANDB_MODE
    (None, "online", "offline", False, "online"),  # WANDB_MODE before the settings file (check_loggers refuses it without key)
    (None, "dryrun", None, True, "offline"),   # W&B's old name
    ("offline", "online", None, True, "offline"),  # logger.mode before everything
    ("disabled", None, None, True, "disabled"),
])
def test_wandb_mode_is_chosen_in_wandbs_own_order(asked, env, settings, credentials, expected):
    assert decide_wandb_mode(asked, env, settings, credentials) == expected


@pytest.mark.cli  # W&B's settings run `git` (to find the code's repository) when they change
def test_wandb_offline_and_online_commands_and_login_credentials_are_read_through_wandb(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from wandb.cli import cli as wandb_cli
    from wandb.sdk import wandb_setup

    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(wandb_setup.singleton().settings, "root_dir", str(tmp_path))  # ./wandb/settings of this folder
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    from prefixlab.config import LoggerConfig

    config = LoggerConfig(wandb=True)
    assert loggers.wandb_settings_mode() is None and not loggers.wandb_has_credentials()
    assert loggers.wandb_mode(config) == "offline"
    host = wandb_setup.singleton().settings.base_url.split("://", 1)[-1]
    netrc.write_text(f"machine {host}\n  login user\n  password {'k' * 40}\n")  # what `wandb login` writes
    netrc.chmod(0o600)
    assert loggers.wandb_has_credentials() and loggers.wandb_mode(config) == "online"
    assert CliRunner().invoke(wandb_cli.offline).exit_code == 0
    assert loggers.wandb_settings_mode() == "offline" and loggers.wandb_mode(config) == "offline"
    assert CliRunner().invoke(wandb_cli.online).exit_code == 0  # clears the setting: credentials decide again
    assert loggers.wandb_settings_mode() is None and loggers.wandb_mode(config) == "online"


def test_online_wandb_without_credentials_is_one_line_before_any_model_loads(tmp_path, offline_wandb, monkeypatch):
    import prefixlab.training.model_loading as model_loading

    loaded = []
    monkeypatch.setattr(model_loading, "load_config", lambda *a, **k: loaded.append(a))
    with pytest.raises(LoggerSetupError) as info:
        train(compose_run("logger=[csv,wandb]", "logger.mode=online"), tmp_path / "run")
    message = str(info.value)
    assert isinstance(info.value, USER_ERRORS) and "\n" not in message  # the CLIs print it as one line
    assert message.startswith("logger.mode=online, but there are no W&B credentials: run `wandb login`")
    assert loaded == [] and not (tmp_path / "run" / "wandb").exists()
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(LoggerSetupError, match="^WANDB_MODE=online, but there are no W&B credentials"):
        check_loggers(OmegaConf.to_object(compose_run("logger=wandb")).logger)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    check_loggers(OmegaConf.to_object(compose_run("logger=wandb", "logger.mode=online")).logger)  # credentials: fine


def test_a_logger_whose_library_is_missing_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(LoggerSetupError, match=r"^logger=mlflow needs mlflow, which is not installed: pip install 'prefixlab\[mlflow\]'"):
        check_loggers(OmegaConf.to_object(compose_run("logger=[csv,mlflow]")).logger)


def test_logger_lists_compose_and_none_at_all_is_refused():
    def on(*overrides):
        logger = OmegaConf.to_object(compose_run(*overrides)).logger
        return loggers.enabled_loggers(logger)

    assert on() == ["csv"]
    assert on("logger=[csv,tensorboard]") == ["csv", "tensorboard"]
    assert on("logger=[wandb,mlflow]") == ["mlflow", "wandb"]
    assert on("logger=mlflow", "logger.tensorboard=true") == ["tensorboard", "mlflow"]
    with pytest.raises(ConfigError, match="^logger: none is on"):
        validate(OmegaConf.to_object(compose_run("logger.csv=false")))
