"""Writing run artifacts so that a crash never leaves a half-written file that looks valid:
write to a temporary file in the same folder, flush it to disk, then rename over the target."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


# tempfile creates private files (0600) and folders (0700); artifacts get the modes a plain
# open() or mkdir() would give them. The umask can only be read by setting it, so once, at import.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk (a rename is only durable once its folder is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the rename is still atomic there
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, then atomically move the result to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: Path, rows: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


# what atomic_write and atomic_replace_dir leave behind when a process is killed mid-save:
# mkstemp's ".<name>.<8 random>.tmp" files, mkdtemp's ".<name>.<8 random>" folders, ".<name>.old" folders
_STALE_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_STALE_FOLDER = re.compile(r"^\.(prefix|trained)\.([a-z0-9_]{8}|old)$")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries that an interrupted save left in a run folder and its checkpoints/
    (never anything else: ``.hydra`` and the artifacts themselves stay). Returns what was removed."""
    removed = []
    for where in (Path(folder), Path(folder) / "checkpoints"):
        if not where.is_dir():
            continue
        for entry in where.iterdir():
            if entry.is_file() and _STALE_FILE.match(entry.name):
                entry.unlink(missing_ok=True)
                removed.append(entry)
            elif entry.is_dir() and not entry.is_symlink() and _STALE_FOLDER.match(entry.name):
                if entry.name.endswith(".old") and not (where / entry.name[1:-4]).exists():
                    continue  # the only copy left by a crash between the two renames: keep it for the user
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def atomic_replace_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder in a temporary sibling, then swap it in place of ``target``.

    Two renames (a folder cannot replace a non-empty one in one step): a crash between them
    leaves no ``target`` but the previous version whole in ``.<target>.old``, never a mix."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(work)
        for written in work.rglob("*"):
            if written.is_file():
                # every artifact gets the same mode (safetensors' writer, for one, makes 0600 files)
                os.chmod(written, 0o666 & ~_UMASK)
                _fsync(written)
        os.chmod(work, 0o777 & ~_UMASK)
        _fsync(work)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            try:
                work.rename(target)
            except BaseException:
                old.rename(target)  # put the previous version back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _fsync(target.parent)
    return target
