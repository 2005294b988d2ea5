"""The jobs of a ``launcher=joblib`` sweep, each in its own process, ``n_jobs`` at a time.

Hydra's joblib launcher runs jobs in a pool of loky workers: when one worker is killed from
outside (the OOM killer, ``kill -9``), loky breaks the whole pool, the sibling job dies with it
and the sweep ends in a TerminatedWorkerError. Here joblib's threads only wait: each job is a
``python -m prefixlab.sweeps.joblib_sweep`` process of its own, given its Hydra state in a
(cloud)pickle file and handing back its ``JobReturn`` the same way. A job that ends without
handing one back (killed by a signal, or exited) gets ``status: killed`` in its metrics.json
(when it left no final status there) and returns NaN like any failed job, and the summary
printed at the end of the sweep names it (``prefixlab.sweeps.summary``, for every launcher).
SIGINT / SIGTERM to the sweep's own process is passed on to the running jobs (``SweepStop``):
they stop with checkpoints, no job starts after it, and the sweep exits 128 + the signal.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

FINAL_STATUSES = ("completed", "failed", "interrupted", "killed")


def _n_jobs(requested: Any) -> int:
    """joblib's meaning of n_jobs: a positive count, or -1 for all cores, -2 for all but one..."""
    n = int(requested if requested is not None else -1)
    return n if n > 0 else max(1, (os.cpu_count() or 1) + 1 + n)


def _how_it_ended(returncode: int) -> tuple[str, str | None]:
    """('killed by SIGKILL', 'SIGKILL') for a process a signal ended, ('exited with code 3', None) otherwise."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"killed by {name}", name
    return f"exited with code {returncode} without a result", None


def _record_killed(job_dir: Path | None, ended: str, signal_name: str | None) -> None:
    """``status: killed`` in the job's metrics.json, unless the job wrote a final status itself."""
    if job_dir is None or not job_dir.is_dir():
        return
    from prefixlab.run.artifacts import atomic_write_json
    from prefixlab.training.reliability import checkpoint_step
    from prefixlab.training.resume import LAST_CHECKPOINT

    metrics_path = job_dir / "metrics.json"
    try:
        if json.loads(metrics_path.read_text()).get("status") in FINAL_STATUSES:
            return
    except (OSError, ValueError):
        pass  # none yet, or cut short: replace it
    checkpoint = job_dir / LAST_CHECKPOINT
    saved = checkpoint_step(checkpoint) if checkpoint.is_file() else None
    atomic_write_json(metrics_path, {
        "status": "killed", "signal": signal_name, "error": f"the job's process was {ended} (out of memory? see dmesg)",
        "checkpoint": str(checkpoint) if saved is not None else None, "last_checkpoint_step": saved})


def _killed_return(overrides: Sequence[str], job_dir: Path | None):
    from hydra.core.utils import JobReturn, JobStatus

    return JobReturn(overrides=list(overrides), working_dir=str(job_dir) if job_dir else None, task_name="train",
                     status=JobStatus.COMPLETED, _return_value=float("nan"))  # NaN: as any failed job of a sweep


class SweepStop:
    """SIGINT / SIGTERM to the sweep's process (``timeout``, ``docker stop`` and some schedulers
    signal only that one): passed on to every running job process, which stops as a single run
    does (``last.ckpt``, ``status: interrupted``), and no job starts after it. A second signal is
    passed on too: the jobs stop at once. The jobs run in process groups of their own, so a
    Ctrl-C in the terminal reaches them once, through this, not twice (which would be "at once")."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.not_started = 0
        self._lock = threading.RLock()  # the handler runs in the main thread, the jobs' threads start and end processes
        self._running: set[subprocess.Popen] = set()
        self._previous: dict[int, Any] = {}

    def listen(self) -> None:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def stop_listening(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        again = self.received is not None
        self.received = signum
        with self._lock:
            running = list(self._running)
        print(f"\nreceived {signal.Signals(signum).name}: " + (f"passing it on to the {len(running)} running sweep jobs "
              "(they stop at once)" if again else f"passing it on to the {len(running)} running sweep jobs (each stops "
              "after its current step, with a checkpoint); no new job starts (send it again to stop at once)"),
              file=sys.stderr, flush=True)
        for process in running:
            try:
                process.send_signal(signum)
            except ProcessLookupError:
                pass  # it ended meanwhile

    def start(self, args: list[str]) -> subprocess.Popen | None:
        """The job's process, or None once a stop was asked for."""
        with self._lock:
            if self.received is not None:
                self.not_started += 1
                return None
            process = subprocess.Popen(args, process_group=0, env=_job_environment())
            self._running.add(process)
            return process

    def ended(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)


def _job_environment() -> dict[str, str]:
    """The job process's environment: this one, with this process's import path as PYTHONPATH. The
    job unpickles the sweep's Hydra state, which may name modules this process imported from folders
    a fresh interpreter would not search (a script's own folder, a test's helpers): a job that
    cannot import them used to end at once with ModuleNotFoundError."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def _run_in_own_process(idx: int, overrides: Sequence[str], state: tuple, work: Path, stop: SweepStop):
    import cloudpickle  # what joblib (loky) pickles jobs with: functions defined in __main__ too

    payload, result, where = work / f"{idx}.in", work / f"{idx}.out", work / f"{idx}.dir"
    payload.write_bytes(cloudpickle.dumps((idx, list(overrides), *state)))
    process = stop.start([sys.executable, "-m", "prefixlab.sweeps.joblib_sweep", str(payload), str(result), str(where)])
    if process is None:  # the sweep was stopped before this job's turn
        return _killed_return(overrides, None), None
    try:
        returncode = process.wait()
    finally:
        stop.ended(process)
    job_dir = Path(where.read_text()) if where.is_file() else None
    if result.is_file():
        return cloudpickle.loads(result.read_bytes()), job_dir
    ended, signal_name = _how_it_ended(returncode)
    _record_killed(job_dir, ended, signal_name)  # a job stopped by the passed-on signal recorded `interrupted` itself
    if stop.received is None:
        print(f"prefixlab-train: sweep job #{idx} {ended}, in {job_dir}; the other jobs go on", file=sys.stderr, flush=True)
    return _killed_return(overrides, job_dir), job_dir


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    from hydra.core.singleton import Singleton
    from hydra.core.utils import configure_log, filter_overrides, setup_globals
    from joblib import Parallel, delayed

    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    n_jobs = _n_jobs(launcher.joblib.get("n_jobs"))
    log.info(f"Joblib.Parallel(n_jobs={n_jobs}, backend=threading) is launching {len(job_overrides)} jobs, each in its "
             f"own process; sweep output dir: {sweep_dir}")
    for idx, overrides in enumerate(job_overrides):
        log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
    state = (launcher.hydra_context, launcher.config, launcher.task_function, Singleton.get_state())
    work = Path(tempfile.mkdtemp(prefix=".joblib-", dir=sweep_dir))
    stop = SweepStop()
    stop.listen()
    try:
        # threads only wait for the job processes: a job that dies takes nothing else with it
        ended = Parallel(n_jobs=n_jobs, backend="threading")(
            delayed(_run_in_own_process)(initial_job_idx + idx, overrides, state, work, stop)
            for idx, overrides in enumerate(job_overrides))
    finally:
        stop.stop_listening()
        shutil.rmtree(work, ignore_errors=True)
    if stop.received is not None:  # as a single run: exit like a process killed by that signal (the summary follows)
        n = stop.not_started
        print(f"prefixlab-train: sweep stopped by {signal.Signals(stop.received).name}"
              + (f"; {n} job{'s' * (n != 1)} not started" if n else "")
              + f" (continue with resume=auto and the same hydra.sweep.dir={sweep_dir})", file=sys.stderr, flush=True)
        sys.exit(128 + stop.received)
    # the summary (this killed job named among the others) is the sweep callback's, as for every launcher
    return [run for run, _ in ended]


def _job_main(payload: Path, result: Path, where: Path) -> None:
    """One job, as Hydra's joblib worker runs it (``execute_job``), in this fresh process."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    import cloudpickle  # what joblib (loky) pickles jobs with: functions defined in __main__ too
    from omegaconf import OmegaConf, open_dict

    idx, overrides, hydra_context, config, task_function, singleton_state = cloudpickle.loads(payload.read_bytes())
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    # the folder run_job will use, for the launcher to find if this process dies
    job_dir = os.path.join(str(OmegaConf.select(sweep_config, "hydra.sweep.dir")),
                           str(OmegaConf.select(sweep_config, "hydra.sweep.subdir")))
    where.write_text(job_dir)
    from prefixlab.run.hydra_files import remember

    remember(Path(job_dir))  # a resume=auto sweep into a sweep's folder: a refused job puts its .hydra/ back
    ret = run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    partial = result.with_suffix(".partial")
    partial.write_bytes(cloudpickle.dumps(ret))
    partial.replace(result)  # whole or not at all


if __name__ == "__main__":
    _job_main(*(Path(a) for a in sys.argv[1:4]))
