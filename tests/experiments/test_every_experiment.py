"""Every experiment file keeps working (lightning-hydra-template's "run every experiment" test).

The experiment list is a glob over conf/experiment/*.yaml, so a new file is covered without
editing this test. For each experiment:
  * every point of its grid (``hydra.sweeper.params``) composes at scale=small and scale=paper,
    passes the typed schema and ``validate``, and its method fits the scale's model;
  * a run without -m is exactly the grid's first point, at both scales;
  * the real CLI trains it for one step on the tiny random model (scale=small, tiny E2E/DART
    files through $PREFIXLAB_DATA), and one experiment runs through ``-m`` into its sweep folder.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from prefixlab.config import TrainConfig, register_configs, validate
from prefixlab.methods import check_method_fits_model

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SCALES = sorted(p.stem for p in (CONF / "scale").glob("*.yaml"))

# Shrinks any experiment to seconds: the tiny random model, one step, a handful of examples.
TINY = [
    "model=tiny_random",
    "trainer.max_steps=1",
    "trainer.enable_progress_bar=false",
    "task.train_size=8",
    "task.val_size=2",
    "task.test_size=2",
    "task.batch_size=2",
    "task.eval_batch_size=2",
    "task.max_source_tokens=48",
    "generation.max_new_tokens=2",
    "generation.num_beams=1",
    "eval_zero_shot=false",
]

register_configs()
import prefixlab.cli.train  # noqa: E402,F401  (registers the ${pid:} resolver the run directories use)


def _compose(overrides: list[str], with_hydra: bool = False):
    """The job's config (what train() gets), or with its ``hydra`` node for the sweep settings."""
    return _compose_once(tuple(overrides), with_hydra)


@functools.lru_cache(maxsize=None)
def _compose_once(overrides: tuple[str, ...], with_hydra: bool):
    # A compose costs ~0.25 s of CPU and these tests compose the same lists again (the sweep axes,
    # the grid's first point): each list once per process. Read-only, so no test can change
    # what another one reads.
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=with_hydra)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _axes(experiment: str, scale: str) -> list[list[str]]:
    """The sweep's axes, each a list of overrides (``key=value``), in hydra.sweeper.params order."""
    params = _compose([f"experiment={experiment}", f"scale={scale}"], with_hydra=True).hydra.sweeper.params or {}
    parser = OverridesParser.create()
    axes = []
    for key, values in params.items():
        (override,) = parser.parse_overrides([f"{key}={values}"])
        choices = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        axes.append([f"{key}={choice}" for choice in choices])
    return axes


def grid(experiment: str, scale: str) -> list[list[str]]:
    """The override lists of every job ``-m experiment=<experiment> scale=<scale>`` would launch, in order."""
    return [list(point) for point in itertools.product(*_axes(experiment, scale))]


def covering_points(experiment: str, scale: str) -> list[list[str]]:
    """Every combination of the config-group axes (method, arm: they choose files through the defaults
    list), each with every value of the plain-value axes once (the others at their first value)."""
    axes = _axes(experiment, scale)
    groups = [a for a in axes if (CONF / a[0].split("=")[0].split("@")[0]).is_dir()]
    values = [a for a in axes if a not in groups]
    points = []
    for chosen in itertools.product(*groups):
        firsts = [a[0] for a in values]
        points.append([*chosen, *firsts])
        for i, axis in enumerate(values):
            points += [[*chosen, *firsts[:i], value, *firsts[i + 1:]] for value in axis[1:]]
    return points


def test_the_glob_finds_the_paper_experiments():
    assert {"e2e_main_table", "prefix_length", "embedding_infix_prefix", "reparameterization", "initialization",
            "low_data", "bbc_headline_full"} <= set(EXPERIMENTS)
    assert SCALES == ["paper", "small"]


@pytest.mark.parametrize("scale", ["small", "paper"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_grid_point_composes_and_validates(experiment, scale):
    from transformers import GPT2Config

    from prefixlab.training.model_loading import load_config

    points = covering_points(experiment, scale)
    assert points, "an empty grid"
    for point in points:
        cfg = _compose([f"experiment={experiment}", f"scale={scale}", *point])
        settings: TrainConfig = OmegaConf.to_object(cfg)  # the typed schema: wrong keys or types fail here
        validate(settings)
        expected_model = {"small": "embedded:smollm2-135m-instruct", "paper": "openai-community/gpt2-medium"}[scale]
        assert settings.model.name_or_path == expected_model
        model_config = load_config(expected_model) if scale == "small" else GPT2Config()  # the hub is offline
        check_method_fits_model(OmegaConf.to_container(cfg.method, resolve=True), model_config)
        for key in point:  # the sweep's value arrived (nothing later in the defaults list overwrote it)
            name, value = key.split("=", 1)
            if not (CONF / name.split("@")[0]).is_dir():
                assert str(OmegaConf.select(cfg, name)) == str(value) or float(OmegaConf.select(cfg, name)) == float(value), key


@pytest.mark.parametrize("scale", ["small", "paper"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_run_without_multirun_is_the_grids_first_point(experiment, scale):
    first = grid(experiment, scale)[0]
    single = _compose([f"experiment={experiment}", f"scale={scale}"])
    pinned = _compose([f"experiment={experiment}", f"scale={scale}", *first])
    assert OmegaConf.to_container(single) == OmegaConf.to_container(pinned), f"without -m the run differs from the grid's first point {first}"


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e != "bbc_headline_full"])
def test_gridded_experiments_name_their_sweep_folder_and_have_a_readme(experiment):
    cfg = _compose([f"experiment={experiment}"], with_hydra=True)
    assert len(grid(experiment, "small")) > 1
    assert OmegaConf.to_container(cfg.hydra.sweep)["dir"].startswith(f"multirun/experiments/{experiment}/")
    readme = REPO / "experiments" / experiment / "README.md"
    assert readme.is_file()
    text = readme.read_text()
    assert f"prefixlab-train -m experiment={experiment}" in text and "scale=paper" in text


def _tiny_data(root: Path) -> Path:
    """E2E- and DART-shaped files with 30 inputs x 2 references each, as $PREFIXLAB_DATA expects them."""
    (root / "e2e").mkdir(parents=True)
    with open(root / "e2e" / "devset.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mr", "ref"])
        for i in range(30):
            mr = f"name[Place {i}], food[Thai], area[city centre]"
            writer.writerows([[mr, f"Place {i} serves Thai food in the city centre."], [mr, f"Place {i} is a Thai place."]])
    (root / "dart").mkdir()
    entries = [
        {"tripleset": [[f"Town {i}", "country", "Spain"]],
         "annotations": [{"source": "t", "text": f"Town {i} is in Spain."}, {"source": "t", "text": f"Spain has Town {i}."}]}
        for i in range(30)
    ]
    (root / "dart" / "dart-v1.1.1-full-dev.json").write_text(json.dumps(entries))
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return _tiny_data(tmp_path_factory.mktemp("data"))


def _cli(args: list[str], cwd: Path, data_root: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PREFIXLAB_DATA": str(data_root)}
    return subprocess.run([sys.executable, "-m", "prefixlab.cli.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.cli
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_one_step_through_the_cli(experiment, tmp_path, data_root):
    result = _cli([f"experiment={experiment}", *TINY], tmp_path, data_root)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 1
    task = OmegaConf.load(run_dir / ".hydra" / "config.yaml").task.name
    if task in ("e2e", "dart"):  # the tiny files under $PREFIXLAB_DATA were read, not the real data
        inputs = [json.loads(line)["input"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
        assert inputs and all(("Place " if task == "e2e" else "Town ") in text for text in inputs), inputs


@pytest.mark.cli
def test_one_experiment_runs_through_multirun_into_its_sweep_folder(tmp_path, data_root):
    # every axis pinned to its first value: a one-job sweep through the real launcher
    first = grid("low_data", "small")[0]
    result = _cli(["-m", "experiment=low_data", *first, *TINY], tmp_path, data_root)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = list((tmp_path / "multirun" / "experiments" / "low_data").glob("*/0/metrics.json"))
    assert len(jobs) == 1, sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("metrics.json"))
    assert json.loads(jobs[0].read_text())["status"] == "completed"


def test_low_data_gives_every_size_the_same_epochs_and_one_test_set():
    """Issue 16: every size used to get 40 steps (6.4 epochs of 50 pairs, 0.64 of 500). Now each size
    trains 5 epochs at scale=small, and the test set does not depend on the size or the subset."""
    for size in (50, 100, 200, 500):
        cfg = _compose(["experiment=low_data", f"experiment/low_data/size='{size}'"])
        assert cfg.task.train_size == size
        assert cfg.trainer.max_steps == -(-5 * size // cfg.task.batch_size), "5 epochs, rounded up to whole steps"
        assert cfg.task.test_size is None and list(cfg.task.split_fractions) == [0.45, 0.1, 0.45]


def test_extrapolation_tests_only_on_a_topic_it_never_trains_on():
    cfg = _compose(["experiment=extrapolation"])
    assert cfg.task.name == "bbc_headline" and cfg.task.test_size is None
    assert set(cfg.task.test_topics) == {"sports"} and "sports" not in cfg.task.train_topics
    finetune = _compose(["experiment=extrapolation", "method=finetune"])
    assert finetune.trainer.max_steps == cfg.trainer.max_steps and finetune.task.batch_size == cfg.task.batch_size, "equal budgets"


@pytest.mark.parametrize("scale", ["small", "paper"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_prefix_grid_can_run_packed(experiment, scale):
    """The docs send prefix grids through ``launcher=packed``: a grid whose every method can share the
    LM must not be refused by the packed launcher (the small-scale configs validate once, at
    max_steps, which the launcher refused as a periodic validation until 2026-12-01). Grids with
    fine-tuning (e2e_main_table, low_data, extrapolation) run without it."""
    from prefixlab.methods import method_names
    from prefixlab.sweeps.packed import packing_problem

    points = covering_points(experiment, scale) if _axes(experiment, scale) else []
    settings = [OmegaConf.to_object(_compose([f"experiment={experiment}", f"scale={scale}", *p])) for p in points]
    if not settings or any(s.method.name not in method_names(packable=True) for s in settings):
        return  # a single run, or a grid with a method that trains the LM: not a packed sweep
    for point, job in zip(points, settings):
        assert packing_problem(job) is None, (point, packing_problem(job))
