"""Keep freed CPU memory for reuse instead of handing it back to the OS after every step.

Why: glibc's malloc serves a block above its mmap threshold (at most 32 MiB on 64-bit Linux)
with a fresh ``mmap`` and unmaps it on ``free``. A training step that holds activations of that
size, such as a packed step over 4 jobs' batches on SmolLM2 (its MLP's [32, ~180, 1536] float32
activations are 35 MB each, 120 of them per step), then maps and unmaps gigabytes per step, and
the kernel zero-fills every page again on first touch: a packed step then spent much more CPU
time in page faults than the same rows as single steps (the measurements: ``bench/`` and the
README's Benchmarks section). Single runs at batch 8 stay below the threshold, which is why they
did not show it.

``keep_freed_memory()`` tells glibc to serve every block from its heap (``M_MMAP_MAX = 0``) and
not to trim the heap's top (``M_TRIM_THRESHOLD``), so the second and later steps reuse the same
pages. The cost: the process keeps its peak memory until it exits, which a training process
reaches anyway at its first step. It is the glibc analogue of running PyTorch on CPU with
jemalloc or tcmalloc, which PyTorch's CPU performance guide recommends for the same reason.

Only packed sweeps on a CPU call it (``packed.train_packed``). Single runs do not: with it, the
single jobs of ``bench.py --only packed`` ran slower and the packed sweep faster (figures:
``bench/``, the README's Benchmarks section). Their blocks stay below the threshold, so they have
nothing to gain, and serving every block from one heap costs them (not investigated further).

Since packed steps on a CPU run forwards of one job's batch size (``packed.choose_rows_per_forward``),
their blocks are a single run's size too, and the setting matters less (``bench/``). It stays
for packed sweeps because it did not hurt them, and it matters again when
``hydra.launcher.rows_per_forward`` is set large.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER = -1  # M_TRIM_THRESHOLD = -1 disables trimming completely (mallopt(3))

OPT_OUT = "PREFIXLAB_KEEP_FREED_MEMORY"  # set to 0 to leave the allocator as it is

_applied: bool | None = None


def _user_tuned_allocator() -> bool:
    """The user chose the allocator's behaviour already: glibc's MALLOC_* tunables, or another
    malloc preloaded (jemalloc, tcmalloc, mimalloc). Theirs wins."""
    if any(name.startswith("MALLOC_") or name == "GLIBC_TUNABLES" for name in os.environ):
        return True
    return any(lib in os.environ.get("LD_PRELOAD", "") for lib in ("jemalloc", "tcmalloc", "mimalloc"))


def keep_freed_memory() -> bool:
    """Make glibc malloc keep and reuse freed blocks for the rest of this process (see the
    module docstring). Returns whether the setting is in effect: False off Linux/glibc, when
    ``PREFIXLAB_KEEP_FREED_MEMORY=0``, or when the user tuned the allocator themselves.
    Idempotent; it changes only allocations made after the call."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT, "1") == "0" or _user_tuned_allocator():
        return False
    try:
        # glibc's soname first: find_library runs /sbin/ldconfig in a subprocess to look it up
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # glibc only: musl and others have no mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both: without M_MMAP_MAX the big blocks still bypass the heap; without the trim threshold
    # the heap's top (where a step's activations sit) goes back to the OS after every backward.
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER))
    return _applied
