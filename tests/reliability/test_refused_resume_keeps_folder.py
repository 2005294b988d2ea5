"""A refused resume leaves the run's folder as it found it (issue 19, "nothing already written is
lost or corrupted"). Hydra writes ``.hydra/config.yaml``, ``overrides.yaml`` and ``hydra.yaml``
into the run folder before the job starts, so a resume refused before training (settings that
differ from the checkpoint's, a checkpoint of another prefix geometry, an out-of-range value)
used to leave the folder recording a config that never ran beside the old checkpoint, and the
refusals other than changed settings also replaced its metrics.json with ``status: failed``."""

import json

import pytest

from pipeline.helpers import TINY_CLI, train_in_process

RUN = [a for a in TINY_CLI if not a.startswith("trainer.max_steps=")] + [
    "trainer.max_steps=2", "trainer.checkpoint_every_n_steps=2", "eval_zero_shot=false"]


def files(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("refused") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert train_in_process(monkeypatch, [*RUN, f"hydra.run.dir={run}"]) is None
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / ".hydra" / "config.yaml").is_file()
    return run


@pytest.mark.parametrize("change, expected", [
    ("optim.lr=0.5", "this run has optim.lr=0.5"),  # honest resume: a result-changing setting
    ("method.prefix_length=2", "prefix"),  # a checkpoint of another prefix geometry
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 is out of range"),  # validate()
    ("+optim.lrr=0.5", "optim.lrr is not a key of optim"),  # the strict check, before the job itself
])
def test_a_refused_resume_leaves_hydra_files_and_metrics_byte_identical(finished_run, monkeypatch, change, expected):
    hydra_before, metrics_before = files(finished_run / ".hydra"), (finished_run / "metrics.json").read_bytes()
    checkpoint_before = (finished_run / "checkpoints" / "last.ckpt").read_bytes()
    message = train_in_process(monkeypatch, [*RUN, f"hydra.run.dir={finished_run}", "resume=auto", change])
    assert isinstance(message, str) and message.startswith("prefixlab-train: error: ") and expected in message, message
    assert files(finished_run / ".hydra") == hydra_before  # no config that never ran beside the checkpoint
    assert (finished_run / "metrics.json").read_bytes() == metrics_before
    assert (finished_run / "checkpoints" / "last.ckpt").read_bytes() == checkpoint_before


def test_the_original_resume_still_works_after_a_refused_one(finished_run, monkeypatch):
    hydra_before = files(finished_run / ".hydra")
    assert train_in_process(monkeypatch, [*RUN, f"hydra.run.dir={finished_run}", "resume=auto", "optim.lr=0.5"]) is not None
    assert train_in_process(monkeypatch, [*RUN, f"hydra.run.dir={finished_run}", "resume=auto"]) is None
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["resumed_at_step"] == 2
    # the accepted resume records its own overrides (Hydra's files are written as for every run)
    assert b"resume=auto" in (finished_run / ".hydra" / "overrides.yaml").read_bytes()
    assert files(finished_run / ".hydra")["config.yaml"] == hydra_before["config.yaml"].replace(b"resume: null", b"resume: auto")


@pytest.mark.parametrize("launcher", ["basic", pytest.param("joblib", marks=pytest.mark.cli)])  # joblib: jobs in processes
def test_a_refused_resume_in_a_sweep_leaves_its_job_folder_as_it_was(tmp_path, monkeypatch, capfd, launcher):
    sweep = tmp_path / "sweep"
    args = ["-m", *RUN, f"launcher={launcher}", f"hydra.sweep.dir={sweep}"]
    assert train_in_process(monkeypatch, [*args, "optim.lr=1e-3"]) is None
    job = sweep / "0"
    before = files(job / ".hydra"), (job / "metrics.json").read_bytes()
    capfd.readouterr()
    assert train_in_process(monkeypatch, [*args, "optim.lr=5e-3", "resume=auto"]) is None  # a refused job: NaN, exit 0
    assert "this run has optim.lr=0.005" in capfd.readouterr().err
    assert (files(job / ".hydra"), (job / "metrics.json").read_bytes()) == before
