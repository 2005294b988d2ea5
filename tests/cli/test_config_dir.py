"""A user's own experiment files outside the repository (issue 18): `--config-dir DIR` adds DIR to
the config search path, so `DIR/experiment/foo.yaml` is `experiment=foo`, typed and checked as the
shipped ones are."""

import sys

from prefixlab.cli import train

EXPERIMENT = """# @package _global_
defaults:
  - override /method: prefix_flat
method:
  prefix_length: 7
trainer:
  max_steps: 11
"""


def compose_through_the_cli(monkeypatch, capsys, args) -> str:
    """`prefixlab-train args --cfg job` in this process: the composed config Hydra prints, or the exit message."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["prefixlab-train", *args, "--cfg", "job"])
    try:
        train.main()
    except SystemExit as exit_:
        return str(exit_.code)
    return capsys.readouterr().out


def test_an_experiment_in_a_config_dir_outside_the_repository_is_composed(tmp_path, monkeypatch, capsys):
    (tmp_path / "myexp" / "experiment").mkdir(parents=True)
    (tmp_path / "myexp" / "experiment" / "foo.yaml").write_text(EXPERIMENT)
    out = compose_through_the_cli(monkeypatch, capsys, ["--config-dir", str(tmp_path / "myexp"), "experiment=foo"])
    assert "prefix_length: 7" in out and "max_steps: 11" in out and "name: prefix_flat" in out, out


def test_a_misspelt_key_in_a_users_experiment_is_refused_at_compose_time(tmp_path, monkeypatch, capsys):
    (tmp_path / "myexp" / "experiment").mkdir(parents=True)
    (tmp_path / "myexp" / "experiment" / "foo.yaml").write_text(EXPERIMENT.replace("max_steps:", "max_step:"))
    message = compose_through_the_cli(monkeypatch, capsys, ["--config-dir", str(tmp_path / "myexp"), "experiment=foo"])
    assert message.startswith("prefixlab-train: error: trainer.max_step is not a key of trainer (TrainerConfig); "
                              "did you mean trainer.max_steps?"), message


def test_without_the_config_dir_the_experiment_is_not_found(tmp_path, monkeypatch, capsys):
    message = compose_through_the_cli(monkeypatch, capsys, ["experiment=foo"])
    assert message.startswith("prefixlab-train: error: experiment=foo is not an option of experiment"), message
