"""prefixlab-report on sweeps written by hand: the table, the best jobs, the plots, bad inputs."""

import csv
import math

import pytest

from prefixlab.cli.report import main
from prefixlab.sweeps import table
from prefixlab.sweeps.jobs import NO_METRICS, find_jobs
from prefixlab.sweeps.plots import series_by

from .conftest import completed, job_config, make_job

NAN_ERROR = "FloatingPointError: loss is nan at step 2; lower optim.lr"
PREFIX = {"method": "prefix", "model": "tiny_random", "task": "bbc_headline"}
FLAT = {**PREFIX, "method": "prefix_flat"}


@pytest.fixture
def sweep(tmp_path):
    """5 jobs: prefix L=1, 5, prefix_flat L=5 (completed), L=10 failed (with a tempting test/rougeL),
    L=20 without metrics.json (still running or killed). model=tiny_random is in every job."""
    root = tmp_path / "multirun" / "2026-11-28" / "10-00-00-000000_p1"
    make_job(root, 0, ["model=tiny_random", "method.prefix_length=1"], PREFIX, job_config("prefix", 1),
             completed(0.20, 2.0, 100), losses=[3.0, 2.5, 2.0])
    make_job(root, 1, ["model=tiny_random", "method.prefix_length=5"], PREFIX, job_config("prefix", 5),
             completed(0.30, 1.5, 500), losses=[3.0, 2.2, 1.6])
    make_job(root, 2, ["model=tiny_random", "method=prefix_flat", "method.prefix_length=5"], FLAT,
             job_config("prefix_flat", 5), completed(0.25, 1.2, 50), losses=[3.1, 2.0, 1.3])
    make_job(root, 3, ["model=tiny_random", "method.prefix_length=10"], PREFIX, job_config("prefix", 10),
             {"status": "failed", "error": NAN_ERROR, "step": 2, "test/rougeL": 0.99, "trainable_params": 1000,
              "runtime_s": 3.0}, losses=[3.0, 9.0])
    make_job(root, 4, ["model=tiny_random", "method.prefix_length=20"], PREFIX, job_config("prefix", 20), None)
    return root


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_table_has_a_row_per_job_with_only_the_overrides_that_differ(sweep):
    main([str(sweep)])
    rows = read_csv(sweep / "report.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "4"]
    columns = list(rows[0])
    assert "model" not in columns  # the same in every job
    assert columns[:4] == ["job", "method.prefix_length", "method", "status"]
    # the sweep's optimized_metric (resolved from val/${task.primary_metric}) first, then the test figure it reports
    assert columns[4:6] == ["val/rougeL", "test/rougeL"]
    # a job that did not override the method ran the default choice, read from .hydra/hydra.yaml
    assert [(r["method.prefix_length"], r["method"]) for r in rows] == [
        ("1", "prefix"), ("5", "prefix"), ("5", "prefix_flat"), ("10", "prefix"), ("20", "prefix")]
    assert [r["status"] for r in rows] == ["completed", "completed", "completed", "failed", NO_METRICS]
    assert rows[3]["error"] == NAN_ERROR and rows[4]["error"] == ""
    assert float(rows[1]["test/rougeL"]) == 0.30 and float(rows[2]["val/loss"]) == 1.2
    assert rows[1]["trainable_params"] == "500" and rows[1]["runtime_s"] == "12.5" and rows[1]["steps"] == "3"
    assert rows[4]["test/rougeL"] == "" and rows[4]["trainable_params"] == ""

    md = (sweep / "report.md").read_text()
    assert "5 jobs: 3 completed, 1 failed, 1 " + NO_METRICS in md
    assert "| 3 | 10 | prefix | failed |  | 0.99 |" in md  # listed with its status, never ranked (below)
    assert "| 1 | 5 | prefix | completed | 0.15 | 0.3 |" in md and "| 500 |" in md


def test_best_job_per_metric_uses_the_metric_direction_and_completed_jobs_only(sweep):
    jobs = find_jobs([sweep])
    best = table.best_jobs(jobs, table.metric_names(jobs))
    assert best["test/rougeL"][0].label == "1"  # 0.30; the failed job's 0.99 does not count
    assert best["val/rougeL"][0].label == "1"
    assert best["val/loss"][0].label == "2" and best["test/loss"][0].label == "2"  # lower is better
    assert "test/zero_shot_rougeL" not in best  # the frozen LM's score says nothing about a job
    assert table.lower_is_better("val/loss") and table.lower_is_better("test/wer")
    assert not table.lower_is_better("test/rougeL") and not table.lower_is_better("test/exact_match")

    main([str(sweep)])
    md = (sweep / "report.md").read_text()
    assert "## Best job per validation metric" in md  # each test metric's own pick is not listed: no choosing by test
    assert "| val/rougeL | higher | 1: prefix_length=5, method=prefix | 0.15 | test/rougeL 0.3 |" in md
    assert "| val/loss | lower | 2: prefix_length=5, method=prefix_flat | 1.2 | test/loss 2.4 |" in md
    assert "| test/rougeL | higher |" not in md


def test_ties_name_the_first_job_and_say_so(tmp_path):
    root = tmp_path / "sweep"
    for num in range(3):
        make_job(root, num, [f"seed={num}"], PREFIX, {**job_config("prefix", 5), "seed": num}, completed(0.5, 1.0, 10))
    main([str(root)])
    md = (root / "report.md").read_text()
    assert "| val/rougeL | higher | 0: seed=0 (tied with 2 more) | 0.25 | test/rougeL 0.5 |" in md
    assert "job 0 (seed=0) (tied with 2 more on val/rougeL: the first is taken), val/rougeL 0.25, test/rougeL 0.5" in md


def test_figure_4_has_one_line_per_method_and_the_pngs_are_written(sweep):
    jobs = find_jobs([sweep])
    assert series_by(jobs, "method.prefix_length", "test/rougeL") == {
        "method=prefix": [(1.0, 0.20), (5.0, 0.30)],  # the failed and the unfinished jobs have no point
        "method=prefix_flat": [(5.0, 0.25)],
    }
    main([str(sweep)])
    for name in ("metric_vs_prefix_length.png", "loss_curves.png"):
        data = (sweep / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert not (sweep / "metric_vs_train_size.png").exists()
    md = (sweep / "report.md").read_text()
    assert "![test/rougeL vs prefix length](metric_vs_prefix_length.png)" in md and "(loss_curves.png)" in md
    assert "skipped test/rougeL vs training-set size: `task.train_size` does not take two values" in md
    assert not list(sweep.glob(".*.tmp")), "written atomically: no temporary file is left"


def test_loss_curves_read_lightning_csv_logs(sweep):
    job = find_jobs([sweep])[2]
    train = [(r["step"], r["train/loss"]) for r in job.history if "train/loss" in r]
    assert train == [(0, 3.1), (1, 2.0), (2, 1.3)]
    assert [r["lr-AdamW"] for r in job.history if "lr-AdamW" in r] == [0.001] * 3
    assert [r["val/loss"] for r in job.history if "val/loss" in r] == [1.2]


def test_low_data_figure_when_the_training_set_size_varies(tmp_path):
    root = tmp_path / "lowdata"
    for num, (size, score) in enumerate([(10, 0.1), (100, 0.2), (1000, 0.3)]):
        make_job(root, num, [f"task.train_size={size}"], PREFIX, job_config("prefix", 5, train_size=size),
                 completed(score, 1.0, 10))
    main([str(root), "--metric", "val/rougeL"])
    jobs = find_jobs([root])
    assert series_by(jobs, "task.train_size", "val/rougeL") == {"val/rougeL": [(10, 0.05), (100, 0.1), (1000, 0.15)]}
    assert (root / "metric_vs_train_size.png").read_bytes()[:4] == b"\x89PNG"
    md = (root / "report.md").read_text()
    assert "skipped val/rougeL vs prefix length" in md and "skipped loss curves: no job logged" in md
    assert not (root / "loss_curves.png").exists()


def test_several_sweeps_by_glob_need_an_output_folder(tmp_path, capsys):
    for name, score in (("a", 0.1), ("b", 0.2)):
        make_job(tmp_path / "sweeps" / name, 0, ["method.prefix_length=3"], PREFIX, job_config("prefix", 3),
                 completed(score, 1.0, 10))
    pattern = str(tmp_path / "sweeps" / "*")
    with pytest.raises(SystemExit) as exit_info:
        main([pattern])
    assert exit_info.value.code == "prefixlab-report: error: 2 sweep folders given: choose where the report goes with --out"
    main([pattern, "--out", str(tmp_path / "out")])
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert [(r["job"], r["test/rougeL"]) for r in rows] == [("a/0", "0.1"), ("b/0", "0.2")]


def test_bad_inputs_are_one_line_naming_the_file(tmp_path, capsys):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes").mkdir()
    for path, message in ((not_a_dir, f"{not_a_dir} is not a directory"),
                          (tmp_path / "missing", f"{tmp_path / 'missing'} is not a directory"),
                          (empty, f"{empty} has no job folders")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(path)])
        assert str(exit_info.value.code).startswith(f"prefixlab-report: error: {message}")
        assert "\n" not in str(exit_info.value.code)


def test_a_corrupt_metrics_json_is_named_and_the_job_listed_as_unreadable(sweep, capsys):
    corrupt = sweep / "1" / "metrics.json"
    corrupt.write_text('{"status": "completed", "test/rou')  # cut short
    main([str(sweep)])
    err = capsys.readouterr().err
    assert f"prefixlab-report: warning: {corrupt}: not valid JSON" in err and len(err.strip().splitlines()) == 1
    rows = read_csv(sweep / "report.csv")
    assert rows[1]["status"] == "unreadable" and str(corrupt) in rows[1]["error"]
    assert table.best_jobs(find_jobs([sweep]), ["test/rougeL"])["test/rougeL"][0].label == "2"  # next best


def test_nan_metrics_are_never_best(tmp_path):
    root = tmp_path / "sweep"
    make_job(root, 0, ["seed=0"], PREFIX, job_config("prefix", 5), completed(math.nan, 1.0, 10))
    make_job(root, 1, ["seed=1"], PREFIX, job_config("prefix", 5), completed(0.1, 1.0, 10))
    assert table.best_jobs(find_jobs([root]), ["test/rougeL"])["test/rougeL"][0].label == "1"


def test_learning_rate_figure_per_method_and_the_bars_of_every_completed_job(tmp_path):
    """The reparameterization question (metric vs lr, one line per method, log x) and the
    per-job bars; a job without the metric has no bar."""
    root = tmp_path / "reparam"
    points = [("prefix", 5e-5, 0.6), ("prefix", 5e-3, 0.3), ("prefix_flat", 5e-5, 0.1), ("prefix_flat", 5e-3, 0.62)]
    for num, (method, lr, score) in enumerate(points):
        make_job(root, num, [f"method={method}", f"optim.lr={lr}"], {**PREFIX, "method": method},
                 job_config(method, 10, lr=lr), completed(score, 1.0, 10))
    make_job(root, 4, ["method=prefix", "optim.lr=1e-2"], PREFIX, job_config("prefix", 10, lr=1e-2),
             {"status": "failed", "error": NAN_ERROR, "step": 2})
    main([str(root)])
    jobs = find_jobs([root])
    assert series_by(jobs, "optim.lr", "test/rougeL") == {
        "method=prefix": [(5e-5, 0.6), (5e-3, 0.3)], "method=prefix_flat": [(5e-5, 0.1), (5e-3, 0.62)]}
    md = (root / "report.md").read_text()
    for name in ("metric_vs_learning_rate.png", "metric_per_job.png"):
        assert (root / name).read_bytes()[:4] == b"\x89PNG", name
        assert f"({name})" in md
    assert "skipped test/rougeL vs prefix length" in md


def test_no_bars_for_fewer_than_two_scored_jobs(tmp_path):
    root = tmp_path / "one"
    make_job(root, 0, ["method.prefix_length=5"], PREFIX, job_config("prefix", 5), completed(0.3, 1.0, 10))
    make_job(root, 1, ["method.prefix_length=10"], PREFIX, job_config("prefix", 10), None)
    (root / "metric_per_job.png").write_bytes(b"stale figure from an earlier report")
    main([str(root)])
    assert "skipped test/rougeL per job: fewer than two completed jobs have test/rougeL" in (root / "report.md").read_text()
    assert not (root / "metric_per_job.png").exists()


def test_mean_and_spread_over_data_subsets_per_setting(tmp_path):
    """The initialization and low-data experiments repeat each setting on several subsets: the
    report averages over task.subset_seed per arm (a failed repeat counts for nothing)."""
    root = tmp_path / "init"
    scores = {("random", 0): 0.2, ("random", 1): 0.4, ("random", 2): 0.3, ("elephant", 0): 0.5, ("elephant", 1): 0.7}
    for num, ((arm, subset), score) in enumerate(scores.items()):
        make_job(root, num, [f"experiment/initialization/arm={arm}", f"task.subset_seed={subset}"], PREFIX,
                 job_config("prefix", 10), completed(score, 1.0, 10))
    make_job(root, 5, ["experiment/initialization/arm=elephant", "task.subset_seed=2"], PREFIX,
             job_config("prefix", 10), {"status": "failed", "error": NAN_ERROR, "step": 2})
    repeat, columns, rows = table.over_repeats(find_jobs([root]), "test/rougeL")
    assert repeat == "task.subset_seed"
    assert columns == ["experiment/initialization/arm", "runs", "mean test/rougeL", "sd", "min", "max"]
    assert rows[0][:2] == ["random", 3] and rows[0][2] == pytest.approx(0.3) and rows[0][3] == pytest.approx(0.1)
    assert rows[1][:2] == ["elephant", 2] and rows[1][2] == pytest.approx(0.6) and rows[1][3] == pytest.approx(2 ** 0.5 / 10)
    assert rows[1][4:] == [0.5, 0.7]
    main([str(root)])
    md = (root / "report.md").read_text()
    assert "## Over `task.subset_seed`" in md and "| random | 3 | 0.3 | 0.1 | 0.2 | 0.4 |" in md
    assert table.over_repeats(find_jobs([root]), "test/rougeL") is not None
    assert table.over_repeats([j for j in find_jobs([root]) if j.setting("task.subset_seed") == "0"], "test/rougeL") is None


def test_the_low_data_figure_averages_the_subsets_of_each_size(tmp_path):
    root = tmp_path / "lowdata_repeats"
    runs = [("prefix", 50, 0, 0.2), ("prefix", 50, 1, 0.4), ("prefix", 100, 0, 0.5), ("prefix", 100, 1, 0.7),
            ("finetune", 50, 0, 0.1), ("finetune", 50, 1, 0.1), ("finetune", 100, 0, 0.6)]
    for num, (method, size, subset, score) in enumerate(runs):
        make_job(root, num, [f"method={method}", f"task.train_size={size}", f"task.subset_seed={subset}"],
                 {**PREFIX, "method": method}, job_config(method, 10, train_size=size), completed(score, 1.0, 10))
    series = series_by(find_jobs([root]), "task.train_size", "test/rougeL")
    assert series.keys() == {"method=prefix", "method=finetune"}  # no line per subset
    assert series["method=prefix"] == [(50, pytest.approx(0.3)), (100, pytest.approx(0.6))]
    assert series["method=finetune"] == [(50, pytest.approx(0.1)), (100, pytest.approx(0.6))]
    main([str(root)])
    assert (root / "metric_vs_train_size.png").read_bytes()[:4] == b"\x89PNG"


def test_no_line_figure_when_the_value_only_follows_another_override(tmp_path):
    """E2E main table: each method has its own learning rate (5e-4, 5e-5), one point per method,
    so a learning-rate figure would draw no line: it is skipped, the bars remain."""
    root = tmp_path / "main_table"
    for num, (method, lr, score) in enumerate([("prefix", 5e-4, 0.6), ("finetune", 5e-5, 0.67), ("adapter", 5e-4, 0.66)]):
        make_job(root, num, [f"method={method}"], {**PREFIX, "method": method}, job_config(method, 10, lr=lr),
                 completed(score, 1.0, 10))
    main([str(root)])
    md = (root / "report.md").read_text()
    assert "skipped test/rougeL vs learning rate: `optim.lr` does not take two values within any one setting" in md
    assert not (root / "metric_vs_learning_rate.png").exists() and (root / "metric_per_job.png").exists()


def test_the_best_job_is_chosen_on_validation_and_reported_with_its_test_figures(tmp_path):
    """Validation and test disagree: job 1 is best on val/rougeL, job 2 on test/rougeL. The report
    chooses job 1 and shows job 1's test figures (never job 2's better test score)."""
    root = tmp_path / "select"
    for num, (length, val, test) in enumerate([(1, 0.40, 0.30), (5, 0.50, 0.31), (10, 0.45, 0.36)]):
        make_job(root, num, [f"method.prefix_length={length}"], PREFIX, job_config("prefix", length),
                 completed(test, 1.0, 10, **{"val/rougeL": val}))
    chosen = table.selection(find_jobs([root]))
    assert (chosen.metric, chosen.reported, chosen.fell_back) == ("val/rougeL", "test/rougeL", False)
    main([str(root)])
    md = (root / "report.md").read_text()
    assert ("Best by val/rougeL (validation chooses; the test figures are that job's): job 1 (prefix_length=5), "
            "val/rougeL 0.5, test/rougeL 0.31") in md
    assert "Test figures of job 1:" in md and "| test/rougeL | 0.31 |" in md and "| test/loss | 2 |" in md
    assert "0.36" not in md.split("## Best job", 1)[1].split("## Plots", 1)[0]  # job 2's test score chooses nothing
    assert "fell back" not in md and "optimized_metric=test/" not in md


def test_old_runs_with_only_test_metrics_fall_back_to_test_and_say_it_inflates(tmp_path):
    root = tmp_path / "old"
    for num, (length, test) in enumerate([(1, 0.30), (5, 0.35)]):
        metrics = {k: v for k, v in completed(test, 1.0, 10).items() if not k.startswith("val/")}
        make_job(root, num, [f"method.prefix_length={length}"], PREFIX, job_config("prefix", length, stage="test"), metrics)
    chosen = table.selection(find_jobs([root]))
    assert (chosen.metric, chosen.fell_back, chosen.optimized_on_test) == ("test/rougeL", True, "test/rougeL")
    main([str(root)])
    md = (root / "report.md").read_text()
    assert ("Best by test/rougeL: no job logged val/rougeL, so selection fell back to the test metric, which inflates "
            "the figure") in md and "job 1 (prefix_length=5), test/rougeL 0.35" in md
    assert "## Best job per metric (no validation metrics: chosen on test, inflated)" in md


def test_runs_that_optimized_a_test_metric_are_still_chosen_on_validation_with_a_note(tmp_path):
    root = tmp_path / "typed_test"
    for num, (length, val, test) in enumerate([(1, 0.5, 0.2), (5, 0.4, 0.3)]):
        make_job(root, num, [f"method.prefix_length={length}"], PREFIX, job_config("prefix", length, stage="test"),
                 completed(test, 1.0, 10, **{"val/rougeL": val}))
    main([str(root)])
    md = (root / "report.md").read_text()
    assert "The jobs ran with optimized_metric=test/rougeL" in md
    assert "Best by val/rougeL (validation chooses; the test figures are that job's): job 0 (prefix_length=1)" in md
