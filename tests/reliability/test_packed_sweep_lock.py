"""A packed sweep holds its folders as single runs do (issue 19): a second sweep into the same
``hydra.sweep.dir`` while it runs is one line naming the owner, before Hydra rewrites the first
sweep's ``multirun.yaml`` (before, the packed launcher refused only at its pack folder,
``<sweep>/pack-0``, after that rewrite, and told the user to choose another hydra.run.dir); a
single run into one of its job folders is one line naming the owner too, and changes nothing there."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.helpers import TINY_CLI

from .conftest import cli_env, one_error_line, run_cli, wait_for

pytestmark = pytest.mark.cli  # the real CLI in subprocesses

PACK_HARNESS = Path(__file__).resolve().parents[1] / "packed" / "harness.py"
SWEEP = ["-m", "launcher=packed", *TINY_CLI, "eval_zero_shot=false", "method.prefix_length=2,4"]


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_running_packed_sweeps_folders_are_refused_naming_the_owner(tmp_path):
    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    owner = subprocess.Popen([sys.executable, str(PACK_HARNESS), "1", str(marker), *SWEEP, f"hydra.sweep.dir={sweep}"],
                             cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker, owner)  # the pack trains: after step 1, paused until a signal
        multirun, job_files = (sweep / "multirun.yaml").read_bytes(), files(sweep / "0")

        second = run_cli([*SWEEP, f"hydra.sweep.dir={sweep}", "resume=auto"], tmp_path, timeout=120)
        assert second.returncode == 1
        line = one_error_line(second.stderr)
        assert f"prefixlab-train: error: {sweep} is in use by process {owner.pid} on " in line, line
        assert "another hydra.sweep.dir" in line, line
        assert (sweep / "multirun.yaml").read_bytes() == multirun

        single = run_cli([*TINY_CLI, f"hydra.run.dir={sweep / '0'}", "resume=auto"], tmp_path, timeout=120)
        assert single.returncode == 1
        assert f"prefixlab-train: error: {sweep / '0'} is in use by process {owner.pid} on " in one_error_line(single.stderr)
        assert files(sweep / "0") == job_files
    finally:
        owner.send_signal(signal.SIGTERM)
        owner.communicate(timeout=120)
    assert owner.returncode == 143  # the owner itself was not disturbed: it stops on its signal, as a pack does
