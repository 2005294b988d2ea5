"""prefixlab-report reads the jobs' saved configs without running OmegaConf resolvers: an
``${oc.env:...}`` in a config never puts an environment value into report.md or report.csv."""

import csv

from prefixlab.cli.report import main
from prefixlab.sweeps.jobs import _resolved

from .conftest import completed, job_config, make_job

SECRET = "s3cr3t-token-that-must-not-leak"
PREFIX = {"method": "prefix", "model": "tiny_random", "task": "bbc_headline"}


def test_environment_secrets_in_saved_configs_never_reach_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFIXLAB_TEST_SECRET", SECRET)
    sweep = tmp_path / "multirun" / "sweep"
    for num, (run_name, length) in enumerate([("${oc.env:PREFIXLAB_TEST_SECRET}", 1), ("plain", 5)]):
        config = job_config("prefix", length)
        config["run_name"] = run_name
        config["logger"] = {"group": "${oc.env:PREFIXLAB_TEST_SECRET}", "tags": ["${oc.env:PREFIXLAB_TEST_SECRET,x}"]}
        make_job(sweep, num, ["model=tiny_random", f"method.prefix_length={length}", f"run_name={run_name}",
                              "logger.group=${oc.env:PREFIXLAB_TEST_SECRET}"],
                 PREFIX, config, completed(0.2 + num / 10, 2.0 - num / 10, 100), losses=[3.0, 2.0])
    main([str(sweep)])
    md, table = (sweep / "report.md").read_text(), (sweep / "report.csv").read_text()
    assert SECRET not in md and SECRET not in table
    rows = list(csv.DictReader(table.splitlines()))
    assert [r["run_name"] for r in rows] == ["${oc.env:PREFIXLAB_TEST_SECRET}", "plain"]  # shown as written
    assert "test/rougeL" in rows[0]  # what the report needs from the config still works


def test_references_within_the_config_are_filled_in_from_the_config_itself(monkeypatch):
    monkeypatch.setenv("PREFIXLAB_TEST_SECRET", SECRET)
    config = {
        "task": {"name": "e2e", "primary_metric": "bleu", "train_size": 10},
        "method": {"name": "prefix", "prefix_length": 5},
        "optimized_metric": "val/${task.primary_metric}",
        "run_name": "${task.name}-${method.name}-L${method.prefix_length}",
        "size": "${task.train_size}",
        "loop": "${loop}",
        "mixed": "${task.name}-${oc.env:PREFIXLAB_TEST_SECRET}",
        "escaped": "\\${task.name}",
        "when": "${now:%H}",
    }
    resolved = _resolved(config)
    assert resolved["optimized_metric"] == "val/bleu"
    assert resolved["run_name"] == "e2e-prefix-L5"
    assert resolved["size"] == 10  # a whole-value reference keeps its type
    assert resolved["loop"] == "${loop}"
    assert resolved["mixed"] == "e2e-${oc.env:PREFIXLAB_TEST_SECRET}"
    assert resolved["escaped"] == "\\${task.name}" and resolved["when"] == "${now:%H}"
    assert SECRET not in repr(resolved)
