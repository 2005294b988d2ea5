"""The scorecard (``prefixlab-report --scorecard``): claims.yaml -> arms' runs -> paired bootstrap ->
verdict -> results.csv and the table of experiments/README.md. Sweeps are written by hand
(``conftest.make_job``) with small synthetic predictions files."""

import csv
import json
import math
import random
import shutil
from pathlib import Path

import pytest
import yaml

from prefixlab.cli.report import main
from prefixlab.sweeps.jobs import ReportError, as_number
from prefixlab.sweeps.scorecard import (END, ONE_RUN, START, Claim, Experiment, Row, build_scorecard,
                                       read_claims, scorecard_table, verdict)
from prefixlab.sweeps.significance import Estimate, seed_spread

from .conftest import make_job

REFERENCES = [(f"the {c} cafe serves {f} food near the river .",) for c in ("red", "blue", "green", "small", "old", "new", "big")
              for f in ("thai", "french", "english", "fast food", "indian")]


def predictions(share_good: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = [{"id": f"e2e-{i:03d}", "input": "", "prediction": refs[0] if rng.random() < share_good else f"nothing {i} here .",
             "references": list(refs)} for i, refs in enumerate(REFERENCES)]
    rng.shuffle(rows)  # each run's own row order: the bootstrap pairs rows by id
    return rows


def make_sweep(root, name: str, jobs: list[tuple[dict, list[dict] | None]], stamp: str = "2026-12-01_10-00-00") -> None:
    """jobs: (settings, predictions rows or None for a failed job); method is a group choice, the rest overrides."""
    sweep = root / "multirun" / "experiments" / name / stamp
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    for num, (settings, rows) in enumerate(jobs):
        settings = dict(settings)
        extra_metrics = settings.pop("_metrics", {})
        overrides = [f"{k}={v}" for k, v in settings.items()]
        config = {"method": {"name": settings.get("method")}, "seed": settings.get("seed", 42),
                  "task": {"name": "e2e", "subset_seed": settings.get("task.subset_seed", 0),
                           "train_size": settings.get("task.train_size")}}
        metrics = {"status": "completed" if rows is not None else "failed", **extra_metrics}
        job = make_job(sweep, num, overrides, {"method": settings.get("method")}, config, metrics)
        if rows is not None:
            (job / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_claims(experiments, name: str, claims: list[dict], **top) -> None:
    (experiments / name).mkdir(parents=True, exist_ok=True)
    data = {"experiment": name, "command": f"prefixlab-train -m experiment={name}", "metric": "bleu", "claims": claims, **top}
    (experiments / name / "claims.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def estimate(low: float, high: float, se: float = 1.0, p: float = 0.5) -> Estimate:
    return Estimate("bleu", (low + high) / 2, low, high, p, se, 250, 2, 1000, 0.95)


@pytest.mark.parametrize("low, high, expect, margin, expected", [
    (0.5, 3.0, "greater", 0, "agrees"), (-3.0, -0.5, "greater", 0, "disagrees"), (-1.0, 2.0, "greater", 0, "unresolved"),
    (-3.0, -0.5, "less", 0, "agrees"), (0.5, 3.0, "less", 0, "disagrees"), (-1.0, 2.0, "less", 0, "unresolved"),
    (-0.8, 2.0, "not_less", 1.0, "agrees"), (-4.0, -1.5, "not_less", 1.0, "disagrees"), (-2.0, 1.0, "not_less", 1.0, "unresolved"),
    (-0.5, 0.5, "equivalent", 1.0, "agrees"), (1.5, 3.0, "equivalent", 1.0, "disagrees"), (0.5, 1.5, "equivalent", 1.0, "unresolved"),
])
def test_the_verdict_is_set_by_where_the_interval_lies(low, high, expect, margin, expected):
    assert verdict(estimate(low, high), expect, margin)[0] == expected


def test_a_verdict_whose_p_value_disagrees_with_its_interval_is_marked_borderline():
    # embedding_infix_prefix, PREFIX-1 vs INFIX-1: [+0.01, +3.45] excludes 0, but p = 0.053
    result, note = verdict(estimate(0.013, 3.45, p=0.053), "greater")
    assert result == "agrees" and "borderline: the two-sided p = 0.053 is not below 0.05" in note
    result, note = verdict(estimate(0.8, 3.45, p=0.004), "greater")
    assert result == "agrees" and "borderline" not in note
    # the scorecard's table shows it beside the verdict, not only in results.csv's note
    claim = Claim("c", "A beats B", "paper", "greater", [(1.0, {"method": "a"}), (-1.0, {"method": "b"})], "bleu")
    edge = Estimate("bleu", 1.7, 0.013, 3.45, 0.053, 1.0, 246, 4, 1000, 0.95)  # two runs per arm
    row = Row(Experiment("x", Path("x"), "", []), claim, edge, [seed_spread([1.0, 2.0])] * 2, *verdict(edge, "greater"))
    assert "**agrees** (borderline: p = 0.053)" in scorecard_table([row])


def test_an_unresolved_verdict_states_the_minimum_detectable_effect_against_the_papers():
    _, note = verdict(estimate(-1.0, 2.0, se=1.0), "greater", paper_effect=1.5)
    assert "includes 0" in note and "detects differences of 2.8 or more with 80% power" in note
    assert "the paper's effect (+1.5) is below that: more test inputs or seeds are needed" in note
    with pytest.raises(ReportError, match="expect=not_less needs a margin > 0"):
        verdict(estimate(-1.0, 2.0), "not_less")


def test_the_scorecard_writes_results_csv_and_the_readme_table(tmp_path):
    experiments = tmp_path / "experiments"
    make_sweep(tmp_path, "main_table", [
        ({"method": "prefix", "seed": 1}, predictions(0.9, 1)), ({"method": "prefix", "seed": 2}, predictions(0.85, 2)),
        ({"method": "finetune", "seed": 1}, predictions(0.2, 3)), ({"method": "finetune", "seed": 2}, predictions(0.25, 4)),
        ({"method": "adapter", "seed": 1}, predictions(0.88, 5)), ({"method": "adapter", "seed": 2}, None),  # failed: left out
    ])
    write_claims(experiments, "main_table", [
        {"id": "prefix_beats_ft", "claim": "PREFIX beats FINE-TUNE", "paper": "69.7 vs 68.2", "paper_effect": 1.5,
         "expect": "greater", "a": {"method": "prefix"}, "b": {"method": "finetune"}},
        {"id": "ft_beats_prefix", "claim": "FINE-TUNE beats PREFIX", "paper": "none", "expect": "greater",
         "a": {"method": "finetune"}, "b": {"method": "prefix"}},
        {"id": "prefix_vs_adapter", "claim": "PREFIX matches ADAPTER", "paper": "69.7 vs 68.9", "expect": "not_less",
         "margin": 20.0, "a": {"method": "prefix"}, "b": {"method": "adapter"}},
    ])
    write_claims(experiments, "not_run_yet", [{"id": "x", "claim": "a claim", "paper": "1.0", "expect": "greater",
                                               "a": {"method": "prefix"}, "b": {"method": "finetune"}}])
    (experiments / "not_run_yet" / "results.csv").write_text("old results\n")
    (experiments / "README.md").write_text(f"# Experiments\n\nKept prose.\n\n{START}\nold table\n{END}\n\nMore prose.\n")

    readme = build_scorecard(experiments, resamples=300)
    rows = list(csv.DictReader((experiments / "main_table" / "results.csv").open()))
    assert [r["claim_id"] for r in rows] == ["prefix_beats_ft", "ft_beats_prefix", "prefix_vs_adapter"]
    assert [r["verdict"] for r in rows] == ["agrees", "disagrees", "agrees"]
    assert {r["n_test"] for r in rows} == {"35"} and [r["runs"] for r in rows] == ["4", "4", "3"]
    assert float(rows[0]["ci_low"]) > 0 and float(rows[0]["value"]) == pytest.approx(-float(rows[1]["value"]))
    # an experiment without runs keeps its results.csv and is unresolved, saying why
    assert (experiments / "not_run_yet" / "results.csv").read_text() == "old results\n"
    text = readme.read_text()
    assert text.startswith("# Experiments\n\nKept prose.") and text.endswith("More prose.\n") and "old table" not in text
    assert "| [not_run_yet](not_run_yet/README.md) | a claim | 1.0 | not run | **unresolved** (not measured: no sweep found" in text
    assert "`prefixlab-train -m experiment=main_table`" in text and "**agrees**" in text and "(n=35, 4 runs)" in text
    # arms with two runs each (seeds or subsets): training noise is in the interval, no mark
    assert ONE_RUN not in rows[0]["note"] and "(one run per arm)" not in text


def test_arms_pair_runs_by_subset_and_a_setting_left_out_of_an_arm_is_one_error(tmp_path):
    experiments = tmp_path / "experiments"
    # subset 0's prefix runs were packed, subset 1's run alone: how a run was launched is not a setting
    launched = lambda m, s: {"launcher": "packed"} if (m, s) == ("prefix", 0) else {}  # noqa: E731
    jobs = [({"method": m, "task.train_size": size, "task.subset_seed": s, **launched(m, s)},
             predictions(share + 0.02 * s, 10 * s + size))
            for m, share in (("prefix", 0.8), ("finetune", 0.3)) for size in (50, 500) for s in (0, 1)]
    make_sweep(tmp_path, "low_data", jobs)
    gap = lambda size: [{"weight": 0.5, "arm": {"method": "prefix", "task.train_size": size}},  # noqa: E731
                        {"weight": -0.5, "arm": {"method": "finetune", "task.train_size": size}}]
    write_claims(experiments, "low_data", [
        {"id": "average_gap", "claim": "PREFIX beats FINE-TUNE on average", "paper": "+2.9", "expect": "greater",
         "terms": gap(50) + gap(500)},
        {"id": "ambiguous", "claim": "no size named", "paper": "", "expect": "greater",
         "a": {"method": "prefix"}, "b": {"method": "finetune"}},
    ])
    main(["--scorecard", str(experiments)])  # the CLI; its sweeps' paths start at the folder above experiments/
    rows = {r["claim_id"]: r for r in csv.DictReader((experiments / "low_data" / "results.csv").open())}
    assert rows["average_gap"]["verdict"] == "agrees" and rows["average_gap"]["runs"] == "8"
    # each arm's spread over its two subsets
    assert "method=prefix, task.train_size=50: " in rows["average_gap"]["arms"] and " over 2 runs)" in rows["average_gap"]["arms"]
    assert rows["ambiguous"]["verdict"] == "unresolved"
    assert "differ in task.train_size (50, 500): add it to the arm, or list one term per value" in rows["ambiguous"]["note"]


def test_a_learning_rate_grid_is_tuned_per_arm_on_validation_never_on_test(tmp_path):
    """prefix_flat's lr 0.005 is best on validation, its lr 5e-05 best on test: the claim uses 0.005."""
    experiments = tmp_path / "experiments"
    make_sweep(tmp_path, "reparameterization", [
        ({"method": "prefix", "optim.lr": 5e-5, "_metrics": {"val/bleu": 50.0}}, predictions(0.9, 1)),
        ({"method": "prefix", "optim.lr": 5e-4, "_metrics": {"val/bleu": 40.0}}, predictions(0.1, 2)),
        ({"method": "prefix_flat", "optim.lr": 5e-5, "_metrics": {"val/bleu": 10.0}}, predictions(0.95, 3)),
        ({"method": "prefix_flat", "optim.lr": 5e-3, "_metrics": {"val/bleu": 45.0}}, predictions(0.2, 4)),
        ({"method": "infix", "optim.lr": 5e-4, "_metrics": {"val/bleu": 30.0}}, predictions(0.3, 5)),
    ])
    grid = [5.0e-5, 5.0e-4, 5.0e-3]
    write_claims(experiments, "reparameterization", [
        {"id": "mlp_beats_flat", "claim": "the MLP beats the flat prefix", "paper": "a slight drop", "expect": "greater",
         "a": {"method": "prefix", "optim.lr": grid}, "b": {"method": "prefix_flat", "optim.lr": "tuned"}},
        {"id": "mlp_beats_infix", "claim": "the MLP beats infix", "paper": "", "expect": "greater",
         "a": {"method": "prefix", "optim.lr": "tuned"}, "b": {"method": "infix", "optim.lr": "tuned"}}])
    build_scorecard(experiments, resamples=200)
    rows = {r["claim_id"]: r for r in csv.DictReader((experiments / "reparameterization" / "results.csv").open())}
    row = rows["mlp_beats_flat"]
    assert row["verdict"] == "agrees", row["note"]
    assert "method=prefix: optim.lr=5e-05 (chosen on val/bleu 50 of 2 settings)" in row["note"]
    assert "method=prefix_flat: optim.lr=0.005 (chosen on val/bleu 45 of 2 settings)" in row["note"]
    # an arm run at one rate only is said to be untuned, not "chosen"
    assert "method=infix: optim.lr=0.0005 (the only setting run, not tuned; val/bleu 30)" in rows["mlp_beats_infix"]["note"]


def test_a_seed_added_at_one_rate_leaves_the_choice_to_the_seeds_every_rate_has(tmp_path):
    """Tune, then replicate: seed 43 run at prefix's lr 5e-4 alone (a poor validation score) does not
    move the choice, which compares the rates on seed 42, the seed both have; the chosen rate's runs
    are all its seeds; the note names the seed, not the subset seed every run shares. An arm with
    one run beside an arm with two is marked for that arm."""
    experiments = tmp_path / "experiments"
    make_sweep(tmp_path, "main_table", [
        ({"method": "prefix", "optim.lr": 5e-5, "seed": 42, "task.subset_seed": 0, "_metrics": {"val/bleu": 50.0}}, predictions(0.5, 1)),
        ({"method": "prefix", "optim.lr": 5e-4, "seed": 42, "task.subset_seed": 0, "_metrics": {"val/bleu": 60.0}}, predictions(0.9, 2)),
        ({"method": "finetune", "optim.lr": 5e-5, "seed": 42, "task.subset_seed": 0, "_metrics": {"val/bleu": 55.0}}, predictions(0.3, 3)),
    ])
    make_sweep(tmp_path, "main_table", [
        ({"method": "prefix", "optim.lr": 5e-4, "seed": 43, "task.subset_seed": 0, "_metrics": {"val/bleu": 20.0}}, predictions(0.85, 4)),
    ], stamp="2026-12-02_10-00-00")
    write_claims(experiments, "main_table", [{"id": "p", "claim": "PREFIX beats FINE-TUNE", "paper": "", "expect": "greater",
                                              "a": {"method": "prefix", "optim.lr": "tuned"}, "b": {"method": "finetune"}}],
                 sweeps=["multirun/experiments/main_table"])
    readme = build_scorecard(experiments, resamples=200)
    row = next(csv.DictReader((experiments / "main_table" / "results.csv").open()))
    # a mean over all runs would put 5e-4 at 40 < 50 and choose 5e-5
    # the subset seed is the same in every run, so the note does not name it
    assert "optim.lr=0.0005 (chosen on val/bleu 60 of 2 settings, on the runs every setting has (seed=42))" in row["note"]
    assert row["runs"] == "3" and "over 2 runs" in row["arms"], row["arms"]
    assert ONE_RUN not in row["note"] and "one run in method=finetune: the interval holds no training noise" in row["note"]
    assert "| **agrees** (one run in an arm) |" in readme.read_text()


def test_a_claims_file_scored_with_claims_prints_its_table_at_a_fixed_setting_and_writes_nothing(tmp_path, capsys):
    """--claims: the arms at one fixed rate (not tuned on validation), printed; no results.csv, runs/ or README."""
    experiments = tmp_path / "experiments"
    make_sweep(tmp_path, "initialization", [
        ({"method": "prefix", "optim.lr": 5e-5, "_metrics": {"val/bleu": 10.0}}, predictions(0.9, 1)),
        ({"method": "prefix", "optim.lr": 5e-4, "_metrics": {"val/bleu": 50.0}}, predictions(0.2, 2)),
        ({"method": "infix", "optim.lr": 5e-5, "_metrics": {"val/bleu": 10.0}}, predictions(0.1, 3)),
        ({"method": "infix", "optim.lr": 5e-4, "_metrics": {"val/bleu": 50.0}}, predictions(0.85, 4)),
    ])
    write_claims(experiments, "initialization", [
        {"id": "low", "claim": "prefix - infix at 5e-5", "paper": "not a paper claim", "expect": "greater",
         "a": {"method": "prefix", "optim.lr": 5e-5}, "b": {"method": "infix", "optim.lr": 5e-5}},
        {"id": "tuned", "claim": "prefix - infix, tuned", "paper": "not a paper claim", "expect": "greater",
         "a": {"method": "prefix", "optim.lr": "tuned"}, "b": {"method": "infix", "optim.lr": "tuned"}}])
    readings = experiments / "initialization" / "readings.yaml"
    (experiments / "initialization" / "claims.yaml").rename(readings)
    main(["--claims", str(readings)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| comparison | ours (A - B, 95% interval) | p |")
    low = next(line for line in lines if line.startswith("| prefix - infix at 5e-5 |"))
    tuned = next(line for line in lines if line.startswith("| prefix - infix, tuned |"))
    # at 5e-5 the prefix is far ahead; tuned on validation both take 5e-4, where infix is ahead
    assert "| agrees (one run per arm) |" in low and "(n=35) |" in low and "method=prefix, optim.lr=5e-05: " in low
    assert "| disagrees (one run per arm) |" in tuned and "method=prefix: optim.lr=0.0005 (chosen on val/bleu 50 of 2 settings)" in tuned
    assert sorted(p.name for p in (experiments / "initialization").iterdir()) == ["readings.yaml"]
    assert not (experiments / "README.md").exists()
    with pytest.raises(SystemExit, match=r"prefixlab-report: error: .*nothing.yaml: no such claims file"):
        main(["--claims", str(experiments / "initialization" / "nothing.yaml")])
    with pytest.raises(SystemExit):
        main(["--claims", str(readings), "--scorecard", str(experiments)])
    assert "give no sweep folders, --newest or --scorecard" in capsys.readouterr().err


def test_a_wrong_claims_file_is_one_error_line_naming_it(tmp_path):
    write_claims(tmp_path, "bad", [{"id": "c1", "claim": "x", "paper": "1", "expect": "bigger", "a": {}, "b": {}}])
    with pytest.raises(ReportError, match=r"bad/claims.yaml: claim c1: expect='bigger'; choose one of greater, less"):
        read_claims(tmp_path / "bad" / "claims.yaml")
    write_claims(tmp_path, "bad", [{"id": "c1", "claim": "x", "paper": "1", "expect": "greater", "a": {"method": "p"}}])
    with pytest.raises(ReportError, match=r"claim c1: give the arms as a: \{...\} and b: \{...\}"):
        read_claims(tmp_path / "bad" / "claims.yaml")
    with pytest.raises(SystemExit, match=r"prefixlab-report: error: .*empty: no <experiment>/claims.yaml below it"):
        (tmp_path / "empty").mkdir()
        main(["--scorecard", str(tmp_path / "empty")])


def test_the_projects_claims_files_parse_and_name_known_metrics():
    experiments = Path(__file__).resolve().parents[2] / "experiments"
    files = sorted(experiments.glob("*/claims.yaml"))
    assert len(files) >= 6
    for path in [*files, *sorted(experiments.glob("*/readings.yaml"))]:  # readings: prefixlab-report --claims FILE
        experiment = read_claims(path)
        assert experiment.claims and experiment.command.startswith("prefixlab-train")
        assert all(claim.paper for claim in experiment.claims)


def test_an_arm_run_alone_beside_the_sweep_is_found_and_a_sweeps_own_jobs_are_not_counted_twice(tmp_path):
    # (and a sweep folder without a job, refused before its first job, is skipped)
    """One arm run as a single run (``hydra.run.dir=multirun/experiments/<name>/<run>``) pairs with the
    sweep's arms; the sweep's job folders (also holding .hydra/) are not taken for single runs."""
    from prefixlab.sweeps.scorecard import sweep_folders

    experiments = tmp_path / "experiments"
    make_sweep(tmp_path, "main_table", [({"method": "finetune"}, predictions(0.3, 3))])
    alone = tmp_path / "multirun" / "experiments" / "main_table" / "single_runs"
    make_job(alone, "prefix", ["experiment=main_table"], {"method": "prefix"},
             {"method": {"name": "prefix"}, "seed": 42, "task": {"name": "e2e", "subset_seed": 0, "train_size": None}},
             {"status": "completed"})
    (alone / "prefix" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in predictions(0.9, 1)))
    refused = tmp_path / "multirun" / "experiments" / "main_table" / "2026-12-01_09-00-00"
    refused.mkdir()  # a sweep the launcher refused: Hydra had written multirun.yaml, no job ran
    (refused / "multirun.yaml").write_text("hydra: {}\n")
    found = sweep_folders(["multirun/experiments/main_table"], tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "multirun/experiments/main_table/2026-12-01_10-00-00", "multirun/experiments/main_table/single_runs/prefix"]
    write_claims(experiments, "main_table", [{"id": "p", "claim": "PREFIX beats FINE-TUNE", "paper": "", "expect": "greater",
                                              "a": {"method": "prefix"}, "b": {"method": "finetune"}}],
                 sweeps=["multirun/experiments/main_table"])
    readme = build_scorecard(experiments, resamples=200)
    row = next(csv.DictReader((experiments / "main_table" / "results.csv").open()))
    assert row["verdict"] == "agrees" and row["runs"] == "2", row["note"]
    # one training run per arm: the verdict says its interval lacks the training noise, in results.csv and the table
    assert ONE_RUN in row["note"] and "| **agrees** (one run per arm) |" in readme.read_text()


def test_an_experiment_whose_only_sweep_was_refused_is_not_measured(tmp_path):
    """A sweep folder with nothing but Hydra's multirun.yaml (the launcher refused every job) gives
    the claim's row "not measured"; the scorecard does not stop."""
    experiments = tmp_path / "experiments"
    refused = tmp_path / "multirun" / "experiments" / "main_table" / "2026-12-01_09-00-00"
    refused.mkdir(parents=True)
    (refused / "multirun.yaml").write_text("hydra: {}\n")
    write_claims(experiments, "main_table", [{"id": "p", "claim": "PREFIX beats FINE-TUNE", "paper": "", "expect": "greater",
                                              "a": {"method": "prefix"}, "b": {"method": "finetune"}}],
                 sweeps=["multirun/experiments/main_table"])
    readme = build_scorecard(experiments, resamples=200)
    assert "not measured: no sweep found under multirun/experiments/main_table" in readme.read_text()


def test_the_runs_an_arm_matched_are_archived_and_rebuild_the_same_results_without_multirun(tmp_path):
    """multirun/ is git-ignored: the scorecard copies each matched run's evidence to
    experiments/<name>/runs/, and a fresh clone (no multirun/) rebuilds the same results.csv and table
    from it; a run both live and archived counts once."""
    experiments = tmp_path / "experiments"
    make_sweep(tmp_path, "main_table", [
        ({"method": "prefix", "optim.lr": 5e-4, "_metrics": {"val/bleu": 60.0}}, predictions(0.9, 1)),
        ({"method": "prefix", "optim.lr": 5e-3, "_metrics": {"val/bleu": 50.0}}, predictions(0.5, 2)),
        ({"method": "finetune", "optim.lr": 5e-5, "_metrics": {"val/bleu": 55.0}}, predictions(0.3, 3)),
        ({"method": "adapter", "optim.lr": 5e-4, "_metrics": {"val/bleu": 55.0}}, predictions(0.3, 4)),  # in no claim
    ])
    write_claims(experiments, "main_table", [
        {"id": "p", "claim": "PREFIX beats FINE-TUNE", "paper": "", "expect": "greater",
         "a": {"method": "prefix", "optim.lr": "tuned"}, "b": {"method": "finetune", "optim.lr": "tuned"}}])
    (experiments / "README.md").write_text(f"# Experiments\n\n{START}\n{END}\n")

    def build() -> tuple[str, str]:
        readme = build_scorecard(experiments, resamples=200)
        return (experiments / "main_table" / "results.csv").read_text(), readme.read_text()

    first = build()
    assert "optim.lr=0.0005 (chosen on val/bleu 60 of 2 settings)" in first[0]
    archive = experiments / "main_table" / "runs"
    assert sorted(p.parent.relative_to(archive).as_posix() for p in archive.rglob("metrics.json")) == [
        "2026-12-01_10-00-00/0", "2026-12-01_10-00-00/1", "2026-12-01_10-00-00/2"]  # the whole grid; not the adapter
    kept_rows = [json.loads(line) for line in (archive / "2026-12-01_10-00-00" / "0" / "predictions.jsonl").open()]
    assert len(kept_rows) == len(REFERENCES) and {tuple(row) for row in kept_rows} == {("id", "prediction")}
    # the references every run shares are kept once, beside the runs
    shared = [json.loads(line) for line in (archive / "references.jsonl").open()]
    assert shared == [{"id": f"e2e-{i:03d}", "references": list(refs)} for i, refs in enumerate(REFERENCES)]
    assert build() == first
    # a run redone into the same folder: the live run is read (not its stale archived copy) and re-archived
    live = tmp_path / "multirun" / "experiments" / "main_table" / "2026-12-01_10-00-00" / "2"
    (live / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in predictions(0.95, 9)))
    second = build()
    value = lambda results: float(next(csv.DictReader(results.splitlines()))["value"])  # noqa: E731
    assert value(first[0]) > 0 > value(second[0])
    shutil.rmtree(tmp_path / "multirun")
    assert build() == second


def test_an_experiment_with_no_run_anywhere_keeps_its_rows_of_the_last_scorecard(tmp_path, capsys):
    experiments = tmp_path / "experiments"
    write_claims(experiments, "kept", [{"id": "x", "claim": "a claim", "paper": "1.0", "expect": "greater",
                                        "a": {"method": "prefix"}, "b": {"method": "finetune"}}])
    row = "| [kept](kept/README.md) | a claim | 1.0 | 5.0 vs 4.0: +1.0 [+0.5, +1.5] BLEU (n=246) | **agrees** | `x` |"
    (experiments / "README.md").write_text(f"# Experiments\n\n{START}\n| experiment | claim |\n|---|---|\n{row}\n{END}\n")
    text = build_scorecard(experiments, resamples=100).read_text()
    assert row in text and "not run" not in text
    assert "no run under multirun/experiments/kept or runs/; its rows of the last scorecard are kept" in capsys.readouterr().err


def test_a_rerun_in_parts_keeps_the_last_rows_of_claims_still_waiting_for_an_arm(tmp_path, capsys):
    """An experiment rerun over several sessions (one sweep per method): while an arm of a claim has no
    run yet, that claim keeps its row of the last results.csv and table, marked KEPT; the claims with
    every arm run are scored from the new runs; the partial runs are archived at once; once the arm
    runs, the mark goes. A claim that fails for another reason is never papered over."""
    from prefixlab.sweeps.scorecard import KEPT

    experiments = tmp_path / "experiments"
    write_claims(experiments, "main_table", [
        {"id": "ft", "claim": "PREFIX beats FINE-TUNE", "paper": "", "expect": "greater",
         "a": {"method": "prefix"}, "b": {"method": "finetune"}},
        {"id": "adapter", "claim": "PREFIX beats ADAPTER", "paper": "", "expect": "greater",
         "a": {"method": "prefix"}, "b": {"method": "adapter"}}])
    (experiments / "README.md").write_text(f"# Experiments\n\n{START}\n{END}\n")
    make_sweep(tmp_path, "main_table", [({"method": "prefix"}, predictions(0.9, 1)), ({"method": "finetune"}, predictions(0.2, 2)),
                                        ({"method": "adapter"}, predictions(0.3, 3))], stamp="2026-11-01_10-00-00")
    build_scorecard(experiments, resamples=200)
    results = experiments / "main_table" / "results.csv"
    old_rows = list(csv.DictReader(results.open()))
    old_lines = [line for line in (experiments / "README.md").read_text().splitlines() if line.startswith("| [main_table]")]
    shutil.rmtree(tmp_path / "multirun")  # the old runs are lost (made before the archive existed)
    shutil.rmtree(experiments / "main_table" / "runs")

    # the rerun's first sweep: the prefix alone completes no claim; every row stays as it was, its run is archived
    make_sweep(tmp_path, "main_table", [({"method": "prefix"}, predictions(0.5, 4))], stamp="2026-12-02_10-00-00")
    build_scorecard(experiments, resamples=200)
    assert list(csv.DictReader(results.open())) == old_rows
    assert [line for line in (experiments / "README.md").read_text().splitlines() if line.startswith("| [main_table]")] == old_lines
    assert (experiments / "main_table" / "runs" / "2026-12-02_10-00-00" / "0" / "predictions.jsonl").is_file()
    assert "no claim has a run of each arm yet" in capsys.readouterr().err

    # the second: fine-tuning; its claim is scored anew, the adapter's claim keeps its last row, marked
    make_sweep(tmp_path, "main_table", [({"method": "finetune"}, predictions(0.2, 5))], stamp="2026-12-02_11-00-00")

    def build() -> tuple[str, str]:
        readme = build_scorecard(experiments, resamples=200)
        return results.read_text(), readme.read_text()

    first = build()
    rows = list(csv.DictReader(first[0].splitlines()))
    assert float(rows[0]["value"]) != pytest.approx(float(old_rows[0]["value"])) and KEPT not in rows[0]["note"]
    assert {k: v for k, v in rows[1].items() if k != "note"} == {k: v for k, v in old_rows[1].items() if k != "note"}
    assert rows[1]["note"] == f"{KEPT}; {old_rows[1]['note']}"
    table = [line for line in first[1].splitlines() if line.startswith("| [main_table]")]
    assert table[1] == old_lines[1].replace("| **agrees**", f"| **agrees** ({KEPT})") and table[0] != old_lines[0]
    assert "prefixlab-report: main_table/adapter: no completed run with method=adapter" in capsys.readouterr().err
    assert build() == first  # the mark is added once
    shutil.rmtree(tmp_path / "multirun")
    assert build() == first  # and a fresh clone rebuilds the same from the archive

    # the adapter runs: the claim is measured again, the mark is gone
    make_sweep(tmp_path, "main_table", [({"method": "adapter"}, predictions(0.8, 6))], stamp="2026-12-03_10-00-00")
    rows = list(csv.DictReader(build()[0].splitlines()))
    assert not any(KEPT in row["note"] for row in rows) and float(rows[1]["value"]) < float(old_rows[1]["value"])

    # a claim that cannot be scored for another reason says so; it is not kept
    make_sweep(tmp_path, "main_table", [({"method": "adapter", "optim.lr": 1e-3}, predictions(0.8, 7))], stamp="2026-12-04_10-00-00")
    row = list(csv.DictReader(build()[0].splitlines()))[1]
    assert row["value"] == "" and row["note"].startswith("not measured: main_table/adapter: the runs with method=adapter differ in optim.lr")


def test_each_committed_results_csv_is_what_its_committed_runs_rebuild(tmp_path):
    """The figures of experiments/*/results.csv and of the scorecard table come from the runs committed
    beside them (experiments/<name>/runs/): rebuilt in a copy with no multirun/, they are the same to
    the last digit. Fails when a result is edited by hand, or the scoring changes without a rebuild."""
    project = Path(__file__).resolve().parents[2] / "experiments"
    archived = sorted(p.parent.name for p in project.glob("*/runs") if p.is_dir())
    if not archived:
        pytest.skip("no experiment has committed runs (experiments/<name>/runs/) yet")
    copy = tmp_path / "experiments"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("*.png"))
    readme = build_scorecard(copy)  # its runs root is tmp_path: no multirun/ there, only the archives

    def same(rebuilt: str, committed: str) -> bool:  # full-precision floats: equal to 1e-9 (another CPU's sums)
        a, b = as_number(rebuilt), as_number(committed)
        return rebuilt == committed or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))

    for name in archived:
        rebuilt = list(csv.DictReader((copy / name / "results.csv").open()))
        committed = list(csv.DictReader((project / name / "results.csv").open()))
        assert [list(r) for r in rebuilt] == [list(r) for r in committed], name
        for got, expected in zip(rebuilt, committed):
            wrong = [k for k in expected if not same(got[k], expected[k])]
            assert not wrong, (name, expected["claim_id"], {k: (got[k], expected[k]) for k in wrong})
    assert readme.read_text() == (project / "README.md").read_text()  # rounded figures: exactly


def test_each_committed_readings_file_prints_the_figures_its_readme_quotes(tmp_path, capsys):
    """experiments/<name>/readings.yaml (comparisons outside the scorecard) scored with --claims on the
    committed runs alone (no multirun/: the runs root is an empty folder): each comparison's figure,
    e.g. "+12.9 [+10.5, +15.1]", is in that experiment's README. Fails when the README's reading is
    edited by hand or goes stale against its runs."""
    project = Path(__file__).resolve().parents[2] / "experiments"
    files = sorted(p for p in project.glob("*/readings.yaml") if (p.parent / "runs").is_dir())
    if not files:
        pytest.skip("no experiment has a readings.yaml beside committed runs yet")
    for path in files:
        main(["--claims", str(path), "--runs-root", str(tmp_path)])
        lines = [line for line in capsys.readouterr().out.splitlines()[2:] if line.startswith("| ")]
        assert len(lines) == len(read_claims(path).claims), path
        readme = (path.parent / "README.md").read_text(encoding="utf-8")
        for line in lines:
            ours = line.split(" | ")[1]
            assert "not run" not in ours, (path, line)
            # "A vs B: +12.9 [+10.5, +15.1] BLEU ..." (a pair of arms) or "+12.9 [+10.5, +15.1] BLEU ..." (a contrast)
            interval = ours.split(": ", 1)[-1].split(" BLEU")[0].split(" ROUGE")[0]
            assert interval in readme, (path.parent.name, line.split(" | ")[0], interval)
