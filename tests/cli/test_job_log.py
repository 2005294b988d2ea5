"""The job log (cli/job_log.py): a job's prints also land in its folder's log, and nothing the
job leaves behind can damage the process's own streams."""

import io
import sys

from prefixlab.cli.job_log import JobLog


def test_a_library_closing_the_stream_it_took_during_a_job_does_not_close_stderr(tmp_path, monkeypatch):
    """Regression: absl's log handler took ``sys.stderr`` (the job's tee) during the first job of a
    sweep and closed it when Hydra reconfigured logging for the second job; the tee passed close()
    on to the process's stderr, and the sweep died with "lost sys.stderr"."""
    stderr, stdout = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "stdout", stdout)
    with JobLog(tmp_path / "train.log"):
        taken = sys.stderr  # what a handler created during the job keeps
        print("during the job", file=sys.stderr)
    assert sys.stderr is stderr and sys.stdout is stdout  # put back
    taken.close()  # the handler's close() in the next job's logging set-up
    assert not stderr.closed
    taken.write("after the job\n")  # still reaches the process's stream; the job's log is closed
    assert stderr.getvalue() == "during the job\nafter the job\n"
    assert (tmp_path / "train.log").read_text() == "during the job\n"


def test_progress_bar_redraws_stay_out_of_the_log(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with JobLog(tmp_path / "train.log"):
        sys.stderr.write("\rstep 1/2")
        sys.stderr.write("done\n")
    assert (tmp_path / "train.log").read_text() == "done\n"
