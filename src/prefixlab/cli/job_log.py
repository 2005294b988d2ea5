"""A job's own output in its folder's log: ``<run dir>/train.log`` (Hydra's job log file).

Hydra writes only ``logging`` records into it; prefixlab reports with ``print`` (the run summary,
warnings, the one-line error), so the log of a failed sweep job was empty. ``JobLog`` copies
``sys.stdout`` and ``sys.stderr`` into the log file for the job's duration and puts the original
streams back afterwards, however the job ends; the originals are never closed (pytest's capture,
an xdist worker's pipe).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any


class _Tee:
    """Writes to the original stream and to the log; everything else (isatty, fileno, encoding) is the original's."""

    def __init__(self, original: IO[str], log: IO[str]) -> None:
        self._original, self._log = original, log

    def write(self, text: str) -> int:
        written = self._original.write(text)
        # progress bars redraw their line with "\r" many times a second: the terminal's business, not the log's
        if "\r" not in text and not self._log.closed:
            self._log.write(text)
        return written

    def flush(self) -> None:
        self._original.flush()
        if not self._log.closed:
            self._log.flush()

    def close(self) -> None:
        """Closes nothing: the streams belong to the process. A library that took ``sys.stderr``
        while the job ran keeps this tee after the job; closing it must not close the process's
        stderr (absl's log handler closes its stream when Hydra reconfigures logging for the next
        job of a sweep: that closed stderr and killed the sweep with "lost sys.stderr")."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class JobLog:
    """``with JobLog(run_dir / "train.log") as log:``: the job's stdout and stderr also go to the log."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> "JobLog":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # append, line by line: Hydra's log handler writes to the same file
            self._file = open(self.path, "a", encoding="utf-8", buffering=1)
        except OSError:
            return self  # an unwritable run folder is reported by the run itself
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self._file), _Tee(sys.stderr, self._file)
        return self

    def line(self, text: str) -> None:
        """Into the log file only (a line the caller prints after the streams are restored)."""
        if self._file is not None and not self._file.closed:
            self._file.write(text.rstrip("\n") + "\n")

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            for stream in self._saved:
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self._file is not None:
            self._file.close()
