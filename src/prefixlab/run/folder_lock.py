"""One run per run folder: a lock held while a run trains, and no silent overwrite of a run's checkpoint.

Two runs started into one ``hydra.run.dir`` used to crash each other and leave run A's
``last.ckpt`` beside run B's ``.hydra`` config (which ``resume=auto`` would then combine); a new run
in an interrupted run's folder overwrote its checkpoint. The lock is an ``fcntl.flock`` on
``<run>/.prefixlab.lock``: the kernel releases it when its process dies however it dies, so a lock
left by a killed run is simply taken over (and the run says so). The file records the owner's pid,
host and start time for the message the next run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from prefixlab.run.storage import OutputDirError

LOCK_FILE = ".prefixlab.lock"


def is_secondary_rank() -> bool:
    """A DDP rank other than 0 (Lightning's launcher re-runs the command with LOCAL_RANK set): it
    works in rank 0's folder, under rank 0's lock."""
    return any(os.environ.get(name, "0") != "0" for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))


class RunFolderTaken(OutputDirError):
    """The run folder belongs to another run (running, or with a checkpoint to resume)."""


def _owner(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner.get("pid"):
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"process {owner['pid']} on {owner.get('host', '?')} (started {started})"


def check_not_running(run_dir: Path) -> None:
    """Raise RunFolderTaken if a live process holds the folder's lock (probing without keeping it)."""
    path = Path(run_dir) / LOCK_FILE
    if is_secondary_rank() or not path.is_file():
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderTaken(f"{run_dir} is in use by {_describe(_owner(path))}; wait for it to finish, "
                                 f"or write elsewhere (another hydra.run.dir)") from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def check_no_unfinished_run(run_dir: Path, resume: str | None, checkpoint: Path) -> None:
    """A folder holding a run's checkpoint is resumed or left alone, never overwritten."""
    if resume is None and checkpoint.is_file() and not is_secondary_rank():
        raise RunFolderTaken(f"{run_dir} already holds a run's checkpoint ({checkpoint}); resume it with resume=auto "
                             f"hydra.run.dir={run_dir}, or write elsewhere (another hydra.run.dir)")


class RunFolderLock:
    """``with RunFolderLock(run_dir):`` hold the folder for this process (rank 0 only under DDP);
    ``key``: the setting that chooses another folder (``hydra.sweep.dir`` for a sweep's folder)."""

    def __init__(self, run_dir: Path, key: str = "hydra.run.dir") -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.key = key
        self.handle = None

    def __enter__(self) -> "RunFolderLock":
        if is_secondary_rank():
            return self  # DDP's other ranks run in rank 0's folder, under its lock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(self.path)
            handle.close()
            raise RunFolderTaken(f"{self.path.parent} is in use by {_describe(owner)}; wait for it to finish, "
                                 f"or write elsewhere (another {self.key})") from None
        previous = _owner(self.path)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            print(f"prefixlab-train: taking over the lock of {_describe(previous)}, which no longer holds it "
                  f"(it was killed or crashed)")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()  # a finished run leaves no owner to report
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
