"""A run's loggers, any number at once (``logger=[csv,tensorboard]``): CSV, TensorBoard, MLflow and
W&B. Each gets the resolved config and the parameter counts, the per-step metrics (Lightning logs
them to every logger of the Trainer) and the generated-samples table in its own form (W&B table,
TensorBoard text, MLflow table artifact). W&B and MLflow hold one run per job, finished in a
``finally`` by the entry points with the job's outcome; ``resume`` continues the same runs, whose
ids are kept in the run folder (``logger_runs.json``)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from prefixlab.config import LOGGERS, ConfigError, LoggerConfig
# the samples table (run/samples_table.py) is a logger callback: callers import it from here too
from prefixlab.run.samples_table import SamplesTable, log_samples, logger_callbacks  # noqa: F401

RUN_IDS = "logger_runs.json"  # in the run folder: {"wandb": id, "mlflow": {"tracking_uri", "run_id"}}


class LoggerSetupError(ConfigError):
    """A logger cannot start as configured: W&B online without credentials, a library not installed."""


def enabled_loggers(config: LoggerConfig) -> list[str]:
    return [name for name in LOGGERS if getattr(config, name)]


# ---------------------------------------------------------------- W&B: the mode W&B itself would pick

def decide_wandb_mode(asked: str | None, env_mode: str | None, settings_mode: str | None, has_credentials: bool) -> str:
    """W&B's own order: ``logger.mode``, then ``WANDB_MODE``, then the settings file that ``wandb
    offline`` writes (``wandb online`` clears it); with none of them, online only with credentials,
    where ``wandb.init`` would stop to prompt for a key: a batch job never prompts."""
    for mode in (asked, env_mode, settings_mode):
        if mode:
            return {"dryrun": "offline", "run": "online"}.get(mode, mode)  # W&B's older names
    return "online" if has_credentials else "offline"


def wandb_settings_mode() -> str | None:
    """The ``mode`` in W&B's settings files (``./wandb/settings``, ``~/.config/wandb/settings``),
    read fresh through W&B's own reader."""
    from wandb.sdk import wandb_setup

    return wandb_setup.singleton().settings.read_system_settings().all().get("mode") or None


def wandb_has_credentials() -> bool:
    """What ``wandb.init`` would log in with: ``WANDB_API_KEY`` or an identity token file, the netrc
    entry ``wandb login`` writes for this W&B host, or a key in the settings."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    from wandb.sdk import wandb_setup

    settings = wandb_setup.singleton().settings
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth
    except ImportError:  # wandb < 0.22
        from wandb.sdk.lib.apikey import api_key

        return bool(api_key(settings=settings))
    try:
        return bool(read_netrc_auth(host=settings.base_url) or settings.api_key)
    except Exception:  # a malformed entry: wandb.init reports it if the run goes online anyway
        return False


def wandb_mode(config: LoggerConfig) -> str:
    """``decide_wandb_mode`` with W&B's settings files and credentials read only where they decide."""
    asked, env_mode = config.mode, os.environ.get("WANDB_MODE")
    if asked or env_mode:
        return decide_wandb_mode(asked, env_mode, None, False)
    settings_mode = wandb_settings_mode()
    return decide_wandb_mode(None, None, settings_mode, not settings_mode and wandb_has_credentials())


def check_loggers(config: LoggerConfig) -> None:
    """Before any model loads: the chosen loggers' libraries are installed, and an online W&B run
    has credentials (without them ``wandb.init`` would prompt, or fail after the model loaded)."""
    import importlib.util

    needs = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}
    for name in enabled_loggers(config):
        if name in needs and not any(importlib.util.find_spec(module) for module in needs[name]):
            raise LoggerSetupError(f"logger={name} needs {needs[name][0]}, which is not installed: "
                                   f"pip install 'prefixlab[{name}]' (or choose another logger)")
    if config.wandb and wandb_mode(config) == "online" and not wandb_has_credentials():
        source = "logger.mode=online" if config.mode else f"WANDB_MODE={os.environ.get('WANDB_MODE')}" \
            if os.environ.get("WANDB_MODE") else "the W&B settings file (mode = online)"
        raise LoggerSetupError(f"{source}, but there are no W&B credentials: run `wandb login` (or set WANDB_API_KEY), "
                               f"or log offline (logger.mode=offline) and `wandb sync` the run folder later")


def wandb_tags(task: str, model_name_or_path: str, random_init: bool, method: str, user_tags: Sequence[str] = ()) -> list[str]:
    """``task:<name>``, ``model:<name>``, ``method:<name>`` (W&B filters on them), then the user's tags."""
    model = model_name_or_path.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1] + ("-random" if random_init else "")
    tags = [f"task:{task}", f"model:{model}", f"method:{method}", *user_tags]
    return [tag[:64] for tag in dict.fromkeys(tags)]  # W&B rejects tags over 64 characters


# ---------------------------------------------------------------- building the loggers

def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` -> ``{"optim/lr": 1e-3}`` (Lightning's separator, so the module's
    own hyperparameters, which Lightning logs at fit start, land on the same keys)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_run_ids(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / RUN_IDS).read_text())
    except (OSError, ValueError):
        return {}


def _rank_zero() -> bool:
    from prefixlab.run.trainer import is_global_zero

    return is_global_zero(None)  # before the Trainer exists: Lightning's rank from the environment


def _keep_run_id(run_dir: Path, name: str, value: Any) -> None:
    if _rank_zero():  # the other DDP ranks hold no logger run
        (run_dir / RUN_IDS).write_text(json.dumps({**_read_run_ids(run_dir), name: value}, indent=1))


def _csv(config, run_dir: Path, run_name: str, hparams: dict, **_):
    from pytorch_lightning.loggers import CSVLogger

    previous = run_dir / "csv" / "metrics.csv"
    if previous.is_file():  # a resumed run: Lightning's CSV logger would delete the log so far
        previous.rename(previous.with_name(f"metrics.until-{time.strftime('%Y%m%d-%H%M%S')}.csv"))
    logger = CSVLogger(save_dir=str(run_dir), name="csv", version="")
    logger.log_hyperparams(hparams)  # csv/hparams.yaml
    return logger


def _tensorboard(config, run_dir: Path, run_name: str, hparams: dict, **_):
    # absl (TensorBoard's logging) warns on stderr at import when TensorFlow is absent; not our business
    logging.getLogger("absl").setLevel(logging.ERROR)
    from pytorch_lightning.loggers import TensorBoardLogger

    # no made-up hp_metric: the HParams view below reads the run's real validation metrics
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    if not _rank_zero():  # the other DDP ranks write nothing (their experiment is Lightning's dummy)
        return logger
    writer = logger.experiment
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    flat = {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in _flatten(hparams).items()}
    metrics = dict.fromkeys(m for m in (hparams.get("optimized_metric"), "val/loss") if m)
    for summary in hparams_summary(flat, metrics):  # the HParams dashboard: these values beside those metrics
        writer._get_file_writer().add_summary(summary)
    import yaml

    writer.add_text("config", "    " + yaml.safe_dump(hparams, sort_keys=False).replace("\n", "\n    "))  # a code block
    logger.log_hyperparams(flat)  # and tensorboard/hparams.yaml
    print(f"tensorboard: view: tensorboard --logdir {run_dir / 'tensorboard'}")
    return logger


def _mlflow_logger_class():
    from pytorch_lightning.loggers import MLFlowLogger

    class KeepParamsMLFlowLogger(MLFlowLogger):
        """MLflow refuses to change a parameter a run has logged, and a resumed run may have changed
        some (``resume_allow_changes``; metrics.json records them): keep the first values."""

        def log_hyperparams(self, params) -> None:
            from lightning_fabric.utilities.logger import _convert_params, _flatten_dict

            if self.run_id is None:  # a DDP rank other than 0
                return
            logged = self.experiment.get_run(self.run_id).data.params
            super().log_hyperparams({k: v for k, v in _flatten_dict(_convert_params(params)).items() if k not in logged})

    return KeepParamsMLFlowLogger


def mlflow_store(config: LoggerConfig, run_dir: Path, sweep_dir: str | None) -> tuple[str, str | None]:
    """The tracking URI and, for a SQLite store, the artifact folder beside it (else MLflow puts
    artifacts in ./mlruns of wherever the command ran). Default: one store per sweep (all jobs in
    one ``mlflow ui``), a single run's in its run folder."""
    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        folder = (Path(sweep_dir) if sweep_dir else run_dir).resolve() / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()
    if uri.startswith("sqlite:///"):
        return uri, (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return uri, None


def _mlflow(config, run_dir: Path, run_name: str, hparams: dict, *, group, job_name, sweep_dir, tags, resume, **_):
    # the SQLite store creates and migrates its tables on first use, one INFO line per step
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    uri, artifacts = mlflow_store(config, run_dir, sweep_dir)
    saved = _read_run_ids(run_dir).get("mlflow") or {}
    run_id = saved.get("run_id") if resume and saved.get("tracking_uri") == uri else None
    if _rank_zero() and run_id is None:
        _mlflow_experiment(uri, config.project, artifacts)
    mlflow_tags = {"group": config.group or group or run_name,
                   **{t.split(":", 1)[0]: t.split(":", 1)[1] if ":" in t else "" for t in list(tags) or config.tags}}
    logger = _mlflow_logger_class()(experiment_name=config.project, run_name=job_name or run_name, tracking_uri=uri,
                                    tags=mlflow_tags, artifact_location=artifacts, run_id=run_id)
    if logger.run_id is not None:  # rank 0
        if run_id is not None:
            logger.experiment.update_run(run_id, status="RUNNING")  # finish_logger ended it as FINISHED or FAILED
        _keep_run_id(run_dir, "mlflow", {"tracking_uri": uri, "run_id": logger.run_id})
        logger.log_hyperparams(hparams)
        view = f"open {uri}" if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}"
        print(f"mlflow: run {logger.run_id} in experiment {config.project}; view: {view}")
    return logger


def _mlflow_experiment(uri: str, name: str, artifacts: str | None) -> None:
    """Get or create the experiment, one process at a time: the jobs of a parallel sweep share the
    store, and two first jobs would both create its tables and the experiment."""
    import fcntl

    from mlflow.tracking import MlflowClient

    lock = Path(uri[len("sqlite:///"):]).with_suffix(".lock") if uri.startswith("sqlite:///") else None
    with open(lock, "a") if lock else open(os.devnull) as handle:
        if lock:
            fcntl.flock(handle, fcntl.LOCK_EX)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            client.create_experiment(name, artifact_location=artifacts)
        elif experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)


def _wandb(config, run_dir: Path, run_name: str, hparams: dict, *, group, job_name, tags, parameter_counts, resume, **_):
    from pytorch_lightning.loggers import WandbLogger

    mode = wandb_mode(config)
    run_id = _read_run_ids(run_dir).get("wandb") if resume else None
    logger = WandbLogger(
        project=config.project,
        entity=config.entity,
        group=config.group or group or run_name,
        tags=list(tags) or list(config.tags),
        name=job_name or run_name,
        save_dir=str(run_dir),
        mode=mode,
        id=run_id,  # resume="allow" (Lightning's default): the same run continues
    )
    if not _rank_zero():
        return logger
    run = logger.experiment
    run.config.update(hparams, allow_val_change=True)
    if parameter_counts:
        run.summary.update(parameter_counts)
    if mode != "disabled" and getattr(run, "id", None):
        _keep_run_id(run_dir, "wandb", run.id)
    return logger


_BUILDERS = {"csv": _csv, "tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}


def build_logger(config: LoggerConfig, run_dir: Path, run_name: str, resolved_config: dict, *,
                 group: str | None = None, job_name: str | None = None, sweep_dir: str | None = None,
                 tags: Sequence[str] = (), parameter_counts: dict[str, Any] | None = None, resume: bool = False) -> list:
    """The loggers ``config`` turns on, in the order csv, tensorboard, mlflow, wandb, for a Trainer's
    ``logger=``. W&B and MLflow runs: in ``config.group`` (else ``group``: the sweep; else the run
    name), named ``job_name`` (the job's overrides; else the run name), tagged ``tags``; the config
    they get is the resolved config plus ``parameters`` (the counts). ``resume``: continue the runs
    whose ids this run folder keeps. ``sweep_dir``: where a sweep's MLflow store lives."""
    hparams = {**resolved_config, **({"parameters": parameter_counts} if parameter_counts else {})}
    loggers: list = []
    try:
        for name in enabled_loggers(config):
            loggers.append(_BUILDERS[name](config, run_dir, run_name, hparams, group=group, job_name=job_name,
                                           sweep_dir=sweep_dir, tags=tags, parameter_counts=parameter_counts, resume=resume))
    except BaseException:
        finish_logger(loggers)  # the runs already started end as failed
        raise
    return loggers


# ---------------------------------------------------------------- finishing

def _outcome(metrics_file: Path | None) -> dict:
    if metrics_file is None or not metrics_file.is_file():
        return {"status": "failed", "error": "no metrics.json was written"}
    try:
        return json.loads(metrics_file.read_text())
    except (OSError, ValueError) as error:
        return {"status": "failed", "error": f"unreadable {metrics_file}: {error}"}


def finish_logger(logger, metrics_file: Path | None = None) -> None:
    """End the job's logger runs (also when the job failed) with what ``metrics_file`` (the job's
    metrics.json) says: status, error, test metrics, runtime. A job that did not complete ends as
    a failed W&B / MLflow run. ``logger``: what ``build_logger`` returned (or one logger, or None).
    A logger that fails to finish is reported on stderr, so the job's own error stays the one raised."""
    loggers = logger if isinstance(logger, (list, tuple)) else [logger] if logger is not None else []
    if not _rank_zero():  # the other DDP ranks hold no logger run
        return
    outcome = None
    for each in loggers:
        kind = type(each).__name__
        if not any(name in kind for name in ("Wandb", "MLFlow", "TensorBoard")):
            continue
        outcome = outcome or _outcome(metrics_file)
        try:
            _finish(each, kind, outcome)
        except Exception as error:  # noqa: BLE001 - inside the entry points' finally
            print(f"prefixlab: warning: could not finish the {kind} run: {error}", file=sys.stderr)


def _finish(logger, kind: str, outcome: dict) -> None:
    completed = outcome.get("status") == "completed"
    if "Wandb" in kind:
        run = logger.experiment
        run.summary.update(outcome)
        run.finish(exit_code=0 if completed else 1)
    elif "MLFlow" in kind:
        if logger.run_id is None:
            return
        client = logger.experiment
        client.set_tag(logger.run_id, "status", str(outcome.get("status")))
        if outcome.get("error"):
            client.set_tag(logger.run_id, "error", str(outcome["error"])[:5000])
        client.set_terminated(logger.run_id, "FINISHED" if completed else "FAILED")
    else:
        logger.finalize("success")  # flush and close the event file
