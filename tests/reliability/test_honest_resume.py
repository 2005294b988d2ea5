"""Honest resume (issue 19): a resume whose result-changing settings differ from its
checkpoint's is refused, naming every differing key with both values; the changes
``resume_allow_changes`` names are applied for real (the restored optimizer gets the new lr) and
recorded in metrics.json. Unchanged resumes stay bit-identical: test_faults_cli.py."""

import csv
import json
import shutil
import signal

import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from prefixlab.config import ConfigError, validate
from prefixlab.training.resume import CheckpointError, ResumeSettingsError, read_checkpoint
from prefixlab.training.resume_settings import APPLIED_ON_RESUME, SETTINGS_KEY, apply_optim_settings, is_result_changing

from .conftest import RUN_CLI, one_error_line, run_cli, start_paused, wait_for

SETTINGS = {"seed": 42, "optim.lr": 0.01, "optim.weight_decay": 0.0, "optim.betas": [0.9, 0.999], "trainer.max_steps": 6,
            "task.train_size": 20, "task.batch_size": 4, "trainer.precision": "32-true"}


def _checkpoint(tmp_path, settings=SETTINGS):
    """A minimal prefixlab-shaped checkpoint; ``settings`` None: one written before settings were recorded."""
    checkpoint = {"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"model": {}, "method": {}, "task_name": "t"},
                  "global_step": 2, "loops": {}, "optimizer_states": []}
    if settings is not None:
        checkpoint[SETTINGS_KEY] = dict(settings)
    path = tmp_path / "last.ckpt"
    torch.save(checkpoint, path)
    return path


def test_the_result_changing_keys():
    for key in ("seed", "optim.lr", "optim.betas", "trainer.max_steps", "trainer.accumulate_grad_batches", "trainer.precision",
                "task.train_size", "task.batch_size", "task.max_source_tokens", "task.test_topics", "model.dtype", "method.dropout"):
        assert is_result_changing(key), key
    for key in ("generation.num_beams", "logger.kind", "run_name", "task.val_size", "task.eval_batch_size",
                "trainer.log_every_n_steps", "trainer.checkpoint_every_n_steps", "model.gradient_checkpointing"):
        assert not is_result_changing(key), key
    assert all(is_result_changing(key) for key in APPLIED_ON_RESUME)


def test_changed_settings_are_refused_all_named_with_both_values(tmp_path):
    path = _checkpoint(tmp_path)
    with pytest.raises(ResumeSettingsError) as info:
        read_checkpoint(path, {}, {}, "t", {**SETTINGS, "optim.lr": 0.02, "seed": 7, "task.train_size": 40})
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "optim.lr=0.01, seed=42, task.train_size=20, this run has optim.lr=0.02, seed=7, task.train_size=40" in message
    assert "resume_allow_changes=[optim.lr]" in message  # only the key a resume can apply is offered


def test_allowed_changes_are_returned_and_the_others_still_refused(tmp_path):
    path = _checkpoint(tmp_path)
    changed = {**SETTINGS, "optim.lr": 0.02, "trainer.max_steps": 8}
    info = read_checkpoint(path, {}, {}, "t", changed, allow=["optim.lr", "trainer.max_steps"])
    assert info["changes"] == {"optim.lr": [0.01, 0.02], "trainer.max_steps": [6, 8]}
    assert read_checkpoint(path, {}, {}, "t", SETTINGS, allow=["optim.lr"])["changes"] == {}  # allowing is not requiring
    with pytest.raises(ResumeSettingsError, match=r"made with trainer.max_steps=6, this run has trainer.max_steps=8;"):
        read_checkpoint(path, {}, {}, "t", changed, allow=["optim.lr"])


def test_a_checkpoint_without_recorded_settings_gets_todays_checks_and_one_warning(tmp_path, capsys):
    path = _checkpoint(tmp_path, settings=None)
    assert read_checkpoint(path, {}, {}, "t", {**SETTINGS, "optim.lr": 0.5})["changes"] == {}
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "records no run settings" in warning[0] and str(path) in warning[0]
    with pytest.raises(CheckpointError, match="made for task"):
        read_checkpoint(path, {}, {}, "other", SETTINGS)


@pytest.mark.parametrize("entries, expected", [
    (["seed"], "resume_allow_changes: seed cannot be changed on resume (the checkpoint's position in the training data"),
    (["optim.lr", "task.batch_size"], "resume_allow_changes: task.batch_size cannot be changed on resume"),
    (["optim.learning_rate"], "resume_allow_changes: 'optim.learning_rate' is no config key"),
    (["generation.num_beams"], "'generation.num_beams' is not a setting that changes the result"),
])
def test_a_bad_allow_list_is_one_line_naming_the_entry_and_the_allowed_ones(entries, expected):
    with pytest.raises(ConfigError) as info:
        validate(_composed(f"resume_allow_changes=[{','.join(entries)}]"))
    assert expected in str(info.value) and "optim.lr, optim.weight_decay" in str(info.value) and "\n" not in str(info.value)
    validate(_composed(f"resume_allow_changes=[{','.join(APPLIED_ON_RESUME)}]"))


def _composed(*overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from prefixlab.cli.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="train", overrides=["model=tiny_random", *overrides]))


def test_restored_optimizer_takes_the_new_lr_and_schedule():
    """Lightning restores AdamW and the schedule after configure_optimizers: the checkpoint's lr
    comes back over the new one, which is what apply_optim_settings undoes."""
    def build(lr, max_steps):
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=lr)
        return optimizer, get_linear_schedule_with_warmup(optimizer, 0, max_steps)

    optimizer, scheduler = build(0.01, 6)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    state = (optimizer.state_dict(), scheduler.state_dict())
    optimizer, scheduler = build(0.04, 8)
    optimizer.load_state_dict(state[0])
    scheduler.load_state_dict(state[1])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 4 / 6)  # the old rate: a silent mix without the fix
    apply_optim_settings([optimizer], [scheduler], {"optim.lr": 0.04, "optim.weight_decay": 0.1, "optim.betas": [0.8, 0.9]})
    group = optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.04 * 6 / 8) and group["weight_decay"] == 0.1 and group["betas"] == (0.8, 0.9)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.04 * 5 / 8)


# ---- through the CLI ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def killed_at_step_2(tmp_path_factory):
    """A run SIGKILLed after its step-2 checkpoint (of 6)."""
    cwd = tmp_path_factory.mktemp("killed")
    run_dir, marker = cwd / "run", cwd / "paused"
    proc = start_paused(2, marker, [*RUN_CLI, f"hydra.run.dir={run_dir}"], cwd)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return run_dir


def _copy(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    checkpoint = copy / "checkpoints" / "last.ckpt"
    return copy, checkpoint, torch.load(checkpoint, weights_only=True)


@pytest.mark.cli
@pytest.mark.parametrize("changes", [{"optim.lr": 0.02}, {"optim.lr": 0.02, "seed": 7}])
def test_a_changed_setting_without_allow_is_refused_and_nothing_is_written(tmp_path, killed_at_step_2, changes):
    run_dir, checkpoint, saved = _copy(killed_at_step_2, tmp_path)
    before = checkpoint.read_bytes()
    result = run_cli([*RUN_CLI, f"hydra.run.dir={run_dir}", "resume=auto", *(f"{k}={v}" for k, v in changes.items())],
                     tmp_path, timeout=120)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    for key, new in changes.items():
        assert f"{key}={saved[SETTINGS_KEY][key]!r}" in line and f"{key}={new!r}" in line, line
    assert "parameters:" not in result.stdout  # refused before the model was built
    assert checkpoint.read_bytes() == before
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "prefix").exists()


@pytest.mark.cli
@pytest.mark.parametrize("max_steps", [6, 8])  # 8: trainer.max_steps allowed too, the schedule decays to the new total
def test_an_allowed_lr_change_reaches_the_restored_optimizer_and_metrics_json(tmp_path, killed_at_step_2, max_steps):
    run_dir, checkpoint, saved = _copy(killed_at_step_2, tmp_path)
    old, new = saved[SETTINGS_KEY]["optim.lr"], 0.02
    assert old != new and saved["global_step"] == 2 and saved[SETTINGS_KEY]["trainer.max_steps"] == 6
    allow = "optim.lr" if max_steps == 6 else "optim.lr,trainer.max_steps"
    result = run_cli([*RUN_CLI, f"hydra.run.dir={run_dir}", "resume=auto", f"optim.lr={new}", f"trainer.max_steps={max_steps}",
                      f"resume_allow_changes=[{allow}]", "trainer.log_every_n_steps=1"], tmp_path)  # logging is free to change
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"(step 2); optim.lr: {old!r} -> {new!r}" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = {"optim.lr": [old, new], **({"trainer.max_steps": [6, 8]} if max_steps == 8 else {})}
    assert metrics["resume_changes"] == expected and metrics["steps"] == max_steps
    with open(run_dir / "csv" / "metrics.csv") as log:  # the resumed part's log
        rates = {int(row["step"]): float(row["lr-AdamW"]) for row in csv.DictReader(log) if row.get("lr-AdamW")}
    # the first resumed step already has the new lr, on the linear schedule to max_steps
    assert rates[2] == pytest.approx(new * (max_steps - 2) / max_steps)
    assert rates[max_steps - 1] == pytest.approx(new * 1 / max_steps)
    final = torch.load(checkpoint, weights_only=True)
    assert final[SETTINGS_KEY]["optim.lr"] == new  # the next resume compares against what was applied
    assert final[SETTINGS_KEY]["trainer.max_steps"] == max_steps
    assert final["optimizer_states"][0]["param_groups"][0]["initial_lr"] == new
    assert final["lr_schedulers"][0]["base_lrs"] == [new]
