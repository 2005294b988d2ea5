"""Strict keys (issue 18): a key no schema has is refused after composition, `+` or not, in one line
naming the key and the nearest valid one. Before, `+trainer.fast_dev_runn=true` or `+foo=1` composed and
the run silently ignored them, and a misspelt key without `+` got Hydra's hint to add it with `+`."""

import pytest
from hydra import compose, initialize_config_dir

from prefixlab.cli import train
from prefixlab.cli.strict import unknown_keys
from prefixlab.config import register_configs

from training.test_fast_dev_run import run_train

REFUSED = [
    ("+method.prefix_lenght=5", "method.prefix_lenght is not a key of method (PrefixOptions); did you mean method.prefix_length?"),
    ("method.prefix_lenght=5", "method.prefix_lenght is not a key of method (PrefixOptions); did you mean method.prefix_length?"),
    ("+trainer.fast_dev_runn=true", "trainer.fast_dev_runn is not a key of trainer (TrainerConfig); did you mean trainer.fast_dev_run?"),
    ("trainer.max_step=3", "trainer.max_step is not a key of trainer (TrainerConfig); did you mean trainer.max_steps?"),
    ("+optim.schedule.gamma=0.5", "optim.schedule is not a key of optim (OptimConfig); its keys: lr, weight_decay"),
    ("+foo=1", "foo is not a key of the config (TrainConfig); its keys: model, method, task"),
    ("+eval_zeroshot=false", "eval_zeroshot is not a key of the config (TrainConfig); did you mean eval_zero_shot?"),
    ("method=prefx", "method=prefx is not an option of method (conf/method/); did you mean method=prefix? its options: adapter"),
]


@pytest.mark.parametrize("override, message", REFUSED, ids=[o for o, _ in REFUSED])
def test_an_unknown_key_is_one_line_naming_it_and_the_nearest_key(tmp_path, monkeypatch, override, message):
    exit_message = run_train(monkeypatch, ["model=tiny_random", override, f"hydra.run.dir={tmp_path / 'run'}"])
    assert isinstance(exit_message, str) and exit_message.startswith(f"prefixlab-train: error: {message}"), exit_message
    assert "\n" not in exit_message and "+" not in exit_message.split(": error: ", 1)[1].split(" ", 1)[0]
    assert "To append" not in exit_message


def compose_train(overrides, **kwargs):
    register_configs()
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, **kwargs)


def test_hydra_keys_and_free_dicts_take_any_key():
    cfg = compose_train(["+hydra.job.env_set.PREFIXLAB_SOMETHING=1", "+model.config_overrides.num_hidden_layers=2",
                         "method=lora", "method.lora_r=4"], return_hydra_config=True)
    assert unknown_keys(cfg) == []


def test_the_shipped_experiments_compose_without_unknown_keys():
    """The strict check must not refuse what the repository ships: the experiments set keys across
    groups, at scale=paper the most (the real CLI runs each: tests/experiments/test_every_experiment.py)."""
    from pathlib import Path

    for option in sorted((Path(train.CONFIG_DIR) / "experiment").glob("*.yaml")):
        assert unknown_keys(compose_train([f"experiment={option.stem}", "scale=paper"])) == [], option.stem


def run_eval(monkeypatch, args):
    from hydra.core.global_hydra import GlobalHydra

    from prefixlab.cli import evaluate

    GlobalHydra.instance().clear()
    monkeypatch.setattr("sys.argv", ["prefixlab-eval", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"])
    try:
        evaluate.main()
    except SystemExit as exit_:
        return exit_.code
    return None


def test_prefixlab_eval_is_as_strict_and_reports_a_bad_source_in_one_line(tmp_path, monkeypatch):
    message = run_eval(monkeypatch, ["model=tiny_random", "+eval.sourc=x", f"hydra.run.dir={tmp_path / 'a'}"])
    assert message == "prefixlab-eval: error: eval.sourc is not a key of eval (EvalOptions); did you mean eval.source?"
    # the shared handler (cli/errors.py): an input error of eval's own, one line, status failed in metrics.json
    message = run_eval(monkeypatch, ["model=tiny_random", f"eval.source={tmp_path / 'nothing'}", f"hydra.run.dir={tmp_path / 'b'}"])
    assert message.startswith("prefixlab-eval: error: ") and "\n" not in message, message
    assert '"status": "failed"' in (tmp_path / "b" / "metrics.json").read_text()
    assert message in (tmp_path / "b" / "evaluate.log").read_text()  # the job's log has its error line
