"""Can the run directory take this run's files: checked before any expensive work."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


class OutputDirError(OSError):
    """The run directory cannot be written."""


def check_writable(run_dir: Path) -> None:
    """Fail before any expensive work if the run directory cannot take files."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as error:
        raise OutputDirError(f"run directory {run_dir} is not writable ({error.strerror}); fix its permissions or free disk space") from error


def check_run_dir_creatable(run_dir: Path) -> None:
    """Fail with one line if ``run_dir`` cannot be created: Hydra creates it before any of our
    code runs and would answer a parent that is a file, or a read-only one, with a traceback."""
    existing = Path(os.path.abspath(run_dir))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"run directory {run_dir} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"run directory {run_dir} cannot be created: {existing} is not writable")


def check_free_space(run_dir: Path, needed_bytes: int) -> None:
    """Fail before training if the disk cannot take the checkpoints and exports of this run."""
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise OutputDirError(
            f"run directory {run_dir} has {free / 2**20:,.0f} MiB free; this run's checkpoint and export need "
            f"about {needed_bytes / 2**20:,.0f} MiB: free disk space or choose another hydra.run.dir"
        )


def storage_needed(counts: dict[str, Any]) -> int:
    """Bytes a run may write: the checkpoint (trainable parameters + two AdamW moments, float32)
    twice (an atomic save holds the old and the new file at once), the export, and 16 MiB of logs."""
    return 4 * (2 * 3 * counts["trainable_params"] + counts["exported_params"]) + 16 * 2**20
