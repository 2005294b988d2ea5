"""The report's plots as a paper needs them: error bars over seeds, the chosen setting marked,
readable ticks, loss axes fitted to the losses, one legend entry per series, the Optuna history,
and ``--newest`` (``make report``) finding a real sweep. The figures are inspected as matplotlib
objects (``_save`` is intercepted) rather than as pixels."""

import os
import time

import pytest
import yaml

from prefixlab.cli.report import main, newest_sweep
from prefixlab.sweeps import plots
from prefixlab.sweeps.jobs import ReportError, find_jobs

from .conftest import completed, job_config, make_job


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plot function saves, by file name, still open for inspection."""
    saved = {}

    def keep(plt, fig, path):
        fig.canvas.draw()  # tick labels are made at draw time
        saved[path.name] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield saved
    import matplotlib.pyplot as plt

    plt.close("all")


def seeds_sweep(root, lengths=(1, 5, 10, 20, 50, 100, 200)):
    """prefix and prefix_flat at several prefix lengths, three seeds each; the flat prefix is worse,
    seed 2 of prefix L=200 is the best single job."""
    n = 0
    for method, shift in (("prefix", 0.0), ("prefix_flat", -0.05)):
        for length in lengths:
            for seed, noise in ((1, -0.01), (2, 0.02), (3, -0.01)):
                score = 0.3 + 0.0005 * length + shift + (noise if length == 200 and method == "prefix" else noise / 4)
                config = {**job_config(method, length), "seed": seed}
                make_job(root, n, [f"method={method}", f"method.prefix_length={length}", f"seed={seed}"],
                         {"method": method}, config, completed(score, 1.5, 100), losses=[3.0, 2.5 - 0.01 * n, 2.0])
                n += 1
    return root


def test_error_bars_are_the_seed_spread_and_the_validation_choice_is_marked(tmp_path, figures):
    jobs = find_jobs([seeds_sweep(tmp_path / "s")])
    spread = plots.series_spread(jobs, "method.prefix_length", "test/rougeL")
    x, mean, sd, runs = spread["method=prefix"][-1]
    assert (x, runs) == (200, 3) and mean == pytest.approx(0.4) and sd == pytest.approx(0.01732, abs=1e-4)
    assert plots.metric_vs_setting(jobs, "method.prefix_length", "test/rougeL", tmp_path / "f.png") is None
    ax = figures["f.png"].axes[0]
    bars = [c for c in ax.containers if c.has_yerr]
    assert len(bars) == 2, "one error-bar series per method"
    heights = [segment[1][1] - segment[0][1] for segment in bars[0].lines[2][0].get_segments()]
    assert heights[-1] == pytest.approx(2 * 0.01732, abs=1e-4), "mean ± one sample sd"
    star = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [200]
    assert "val/rougeL" in star[0].get_label(), "marked: the setting validation chose"
    assert ax.get_title() and "sd over seed" in ax.get_ylabel()


def test_past_ten_series_each_line_still_looks_different(tmp_path, figures):
    """12 (method, rate) series, as embedding_infix_prefix plots them: the 10-colour cycle repeats,
    so the line style must tell the 11th from the 1st."""
    root, n = tmp_path / "s", 0
    for method in ("prefix", "infix", "embedding"):
        for lr in (1e-4, 2e-4, 5e-4, 1e-3):
            for length in (1, 10):
                make_job(root, n, [f"method={method}", f"method.prefix_length={length}", f"optim.lr={lr}"],
                         {"method": method}, job_config(method, length, lr=lr), completed(0.3 + 0.001 * n, 1.5, 10))
                n += 1
    assert plots.metric_vs_setting(find_jobs([root]), "method.prefix_length", "test/rougeL", tmp_path / "f.png") is None
    ax = figures["f.png"].axes[0]
    series = [c.lines[0] for c in ax.containers]
    assert len(series) == 12
    looks = {(line.get_color(), line.get_linestyle()) for line in series}
    assert len(looks) == 12, "two series drawn alike"


def test_prefix_length_ticks_are_integers_and_never_offset(tmp_path, figures):
    jobs = find_jobs([seeds_sweep(tmp_path / "s")])
    plots.metric_vs_setting(jobs, "method.prefix_length", "test/rougeL", tmp_path / "f.png")
    ax = figures["f.png"].axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert ax.yaxis.get_offset_text().get_text() == "" and ax.xaxis.get_offset_text().get_text() == ""


def test_a_size_set_through_a_group_option_is_the_x_axis_not_a_series(tmp_path, figures):
    """low_data's sizes are a group option (``experiment/low_data/size='50'``) that sets
    ``task.train_size`` and the steps; the curve against the size is one line per method, the
    subsets averaged. Before, the option counted as another override: each point its own series,
    and the plot was skipped."""
    root, n = tmp_path / "low_data", 0
    for method, shift, lr in (("prefix", 0.02, 5e-4), ("finetune", 0.0, 5e-5)):
        for size in (50, 100, 200):
            for subset in (0, 1):
                config = job_config(method, 10, train_size=size, lr=lr)
                config["task"]["subset_seed"] = subset
                launcher = ["launcher=packed"] if method == "prefix" else []  # as low_data runs them
                make_job(root, n, [f"method={method}", f"experiment/low_data/size='{size}'", f"task.subset_seed={subset}",
                                   *launcher],
                         {"method": method, "experiment/low_data/size": str(size)}, config,
                         completed(0.3 + shift + 0.0001 * size + 0.01 * subset, 1.0, 10))
                n += 1
    jobs = find_jobs([root])
    spread = plots.series_spread(jobs, "task.train_size", "test/rougeL")
    assert sorted(spread) == ["method=finetune", "method=prefix"], "the launcher follows from the method: not named"
    assert [(x, runs) for x, _, _, runs in spread["method=prefix"]] == [(50, 2), (100, 2), (200, 2)]
    assert plots.metric_vs_setting(jobs, "task.train_size", "test/rougeL", tmp_path / "size.png") is None
    assert len([c for c in figures["size.png"].axes[0].containers if c.has_yerr]) == 2
    # a launcher that does not follow from the method sets series apart, and is named
    make_job(root, n, ["method=finetune", "experiment/low_data/size='50'", "task.subset_seed=0", "launcher=joblib"],
             {"method": "finetune", "experiment/low_data/size": "50"},
             job_config("finetune", 10, train_size=50, lr=5e-5),
             completed(0.3, 1.0, 10))
    names = sorted(plots.series_spread(find_jobs([root]), "task.train_size", "test/rougeL"))
    assert len(names) == 3 and all(name.startswith("method=") for name in names), names
    assert "method=finetune, launcher=joblib" in names and "method=prefix, launcher=packed" in names
    # each method its own learning rate: the rate varies with the method, so no curve against it
    assert "does not take two values" in plots.metric_vs_setting(jobs, "optim.lr", "test/rougeL", tmp_path / "lr.png")


def test_log_axes_tick_the_swept_values(tmp_path, figures):
    root = tmp_path / "lr"
    for n, lr in enumerate((1e-5, 5e-5, 1e-4, 5e-4)):
        make_job(root, n, [f"optim.lr={lr}"], {"method": "prefix"}, job_config("prefix", 5, lr=lr),
                 completed(0.3 + 0.01 * n, 1.0, 10))
    plots.metric_vs_setting(find_jobs([root]), "optim.lr", "test/rougeL", tmp_path / "lr.png", log_x=True)
    ax = figures["lr.png"].axes[0]
    assert ax.get_xscale() == "log"
    assert [label.get_text() for label in ax.get_xticklabels()] == ["1e-05", "5e-05", "0.0001", "0.0005"]


def test_losses_are_dots_on_an_axis_fitted_to_them_scores_are_bars_from_zero(tmp_path, figures):
    root = tmp_path / "s"
    for n in range(4):
        make_job(root, n, [f"optim.lr={n}"], {"method": "prefix"}, job_config("prefix", 5),
                 completed(0.3 + 0.01 * n, 2.40002 + 2e-5 * n, 10))
    jobs = find_jobs([root])
    plots.metric_per_job(jobs, "val/loss", tmp_path / "loss.png")
    ax = figures["loss.png"].axes[0]
    assert not ax.patches, "no bars for a loss"
    assert ax.get_xlim()[0] > 2.3, "the loss axis does not start at 0"
    assert ax.xaxis.get_offset_text().get_text() == ""
    labels = [text.get_text() for text in ax.texts]
    assert len(set(labels)) == 4, f"values that differ print differently: {labels}"
    plots.metric_per_job(jobs, "test/rougeL", tmp_path / "score.png")
    ax = figures["score.png"].axes[0]
    assert len(ax.patches) == 4 and ax.get_xlim()[0] == 0


def test_loss_curves_have_one_legend_entry_per_setting(tmp_path, figures):
    jobs = find_jobs([seeds_sweep(tmp_path / "s", lengths=(1, 5))])
    assert plots.loss_curves(jobs, tmp_path / "loss.png") is None
    legend = figures["loss.png"].axes[0].get_legend()
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == ["method=prefix, prefix_length=1", "method=prefix, prefix_length=5",
                      "method=prefix_flat, prefix_length=1", "method=prefix_flat, prefix_length=5"]
    lines = figures["loss.png"].axes[0].get_lines()
    assert len({line.get_color() for line in lines if line.get_label() == labels[0]}) == 1


def optuna_sweep(root, values):
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"sweeper": {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}}}))
    for n, value in enumerate(values):
        metrics = {"status": "failed", "error": "x"} if value is None else completed(2 * value, 1.0, 10)
        make_job(root, n, [f"optim.lr={n}"], {"method": "prefix"}, job_config("prefix", 5), metrics)
    return root


def test_an_optuna_sweep_gets_its_optimization_history(tmp_path, figures):
    root = optuna_sweep(tmp_path / "optuna", [0.1, 0.3, None, 0.2, 0.4])  # val/rougeL = the value
    main([str(root)])
    assert "(optimization_history.png)" in (root / "report.md").read_text()
    ax = figures["optimization_history.png"].axes[0]
    best = next(line for line in ax.get_lines() if line.get_label() == "best so far")
    assert list(best.get_ydata()) == pytest.approx([0.1, 0.3, 0.3, 0.4]), "the running best, higher is better"
    crosses = next(line for line in ax.get_lines() if line.get_marker() == "x")
    assert list(crosses.get_xdata()) == [2], "the failed trial is shown"
    grid = tmp_path / "grid"
    make_job(grid, 0, ["optim.lr=1"], {"method": "prefix"}, job_config("prefix", 5), completed(0.2, 1.0, 10))
    make_job(grid, 1, ["optim.lr=2"], {"method": "prefix"}, job_config("prefix", 5), completed(0.3, 1.0, 10))
    main([str(grid)])
    assert "optimization_history" not in (grid / "report.md").read_text(), "a grid is not an Optuna sweep"


def test_newest_picks_the_latest_real_sweep_not_a_folder_of_sweeps(tmp_path, capsys):
    root = tmp_path / "multirun"
    older, newer = optuna_sweep(root / "2026-11-30" / "10-00", [0.1, 0.2]), optuna_sweep(root / "2026-12-01" / "09-00", [0.3, 0.4])
    (root / "experiments" / "low_data" / "size_50").mkdir(parents=True)  # groups sweeps: no multirun.yaml
    os.utime(older / "multirun.yaml", (time.time() + 60, time.time() + 60))  # rewritten last: the newest
    assert newest_sweep(root) == older
    main(["--newest", str(root)])
    assert (older / "report.md").is_file() and not (newer / "report.md").exists()
    with pytest.raises(ReportError, match="no sweep under"):
        newest_sweep(tmp_path / "empty")
