"""experiments/wandb_sweep.yaml: the command W&B's agent builds from it composes a valid prefixlab config."""

import sys
from pathlib import Path

import pytest
import yaml

from .conftest import run_cli

SWEEP_FILE = Path(__file__).resolve().parents[2] / "experiments" / "wandb_sweep.yaml"


def agent_command(sweep: dict, values: dict) -> list[str]:
    """The command line W&B's agent runs for one run with these parameter values (the macro
    expansion of wandb_agent.Agent, with W&B's own argument formatting)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    macros = {"${env}": ["/usr/bin/env"], "${interpreter}": [sys.executable], "${program}": [sweep["program"]]}
    command = []
    for part in sweep["command"]:
        if part in macros:
            command += macros[part]
        elif part.startswith("${") and part.endswith("}"):
            command += args[part[2:-1]]
        else:
            command.append(part)
    return command


def test_the_sweep_file_parses_and_drives_prefixlab_train_through_hydra_overrides():
    from wandb.sdk.launch.sweeps.utils import load_sweep_config

    sweep = load_sweep_config(str(SWEEP_FILE))
    assert sweep["method"] in ("grid", "random", "bayes")
    assert sweep["metric"] == {"name": "val/rougeL", "goal": "maximize"}  # W&B chooses runs on validation
    assert "test/rougeL" not in SWEEP_FILE.read_text()  # nor does a comment say to optimize a test metric
    command = sweep["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m", "prefixlab.cli.train"] and "${args_no_hyphens}" in command
    assert "${args}" not in command  # --key=value would not be a Hydra override


@pytest.mark.cli
def test_the_agents_command_line_composes_a_config_with_the_swept_values(tmp_path):
    sweep = yaml.safe_load(SWEEP_FILE.read_text())
    params = sweep["parameters"]
    # one run's values: the last of each list, the upper bound of each distribution
    values = {k: p["values"][-1] if "values" in p else p["max"] for k, p in params.items()}
    command = agent_command(sweep, values)
    assert command[0] == "/usr/bin/env" and command[1] == sys.executable
    assert "method.prefix_length=40" in command and "method=prefix_flat" in command
    result = run_cli([*command[4:], "--cfg", "job"], tmp_path, timeout=120)  # python -m prefixlab.cli.train <rest>
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = yaml.safe_load(result.stdout)
    assert cfg["method"]["name"] == "prefix_flat" and cfg["method"]["prefix_length"] == 40
    assert cfg["optim"]["lr"] == values["optim.lr"] == 1e-3
    assert cfg["logger"]["wandb"] is True and cfg["logger"]["csv"] is False and cfg["logger"]["mode"] == "online"
    assert f"val/{cfg['task']['primary_metric']}" == sweep["metric"]["name"]  # the run's optimized_metric
    assert cfg["optimized_metric"] == "val/${task.primary_metric}"
    # and the values pass the range checks a run makes before loading anything
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from prefixlab.config import validate
    from prefixlab.cli.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        validate(OmegaConf.to_object(compose(config_name="train", overrides=command[4:])))
