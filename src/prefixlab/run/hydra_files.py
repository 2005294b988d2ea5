"""A run refused before it trains leaves its folder's ``.hydra/`` as it found it.

Hydra writes ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` into the run folder
before the job starts, so a resume that prefixlab then refuses (settings that differ from the
checkpoint's, a checkpoint of another kind, an out-of-range value) would leave the folder
recording a config that never ran beside the old checkpoint. The entry point remembers the
files of a folder that already holds a run before Hydra starts (``remember``; a sweep's job
processes for their own folders), and the job puts them back when it is refused
(``put_back``). The files are a few KiB each: kept in memory.
"""

from __future__ import annotations

from pathlib import Path

HYDRA_SUBDIR = ".hydra"
_remembered: dict[Path, dict[str, bytes]] = {}


def remember(run_dir: Path) -> None:
    """Keep the bytes of ``run_dir/.hydra/*`` as they are now (nothing if there is no such folder)."""
    folder = Path(run_dir).resolve() / HYDRA_SUBDIR
    try:
        saved = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    except OSError:  # no .hydra/: a new folder, nothing to keep
        return
    _remembered[folder.parent] = saved


def put_back(run_dir: Path) -> bool:
    """Restore ``run_dir/.hydra/`` to the remembered bytes (atomically, file by file; files Hydra
    added are removed). False if nothing was remembered for ``run_dir``: it held no run before."""
    from prefixlab.run.artifacts import atomic_write

    run_dir = Path(run_dir).resolve()
    saved = _remembered.pop(run_dir, None)
    if saved is None:
        return False
    folder = run_dir / HYDRA_SUBDIR
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.is_file() and path.name not in saved:
            path.unlink()
    for name, data in saved.items():
        path = folder / name
        if not path.is_file() or path.read_bytes() != data:
            atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
    return True


def forget(run_dir: Path) -> None:
    """The run was accepted: Hydra's new files stand."""
    _remembered.pop(Path(run_dir).resolve(), None)
