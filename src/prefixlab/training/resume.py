"""Resuming a run: which checkpoint, is it usable, and where in the data the run was.

A resumed run equals an uninterrupted one (bit-identical on CPU, tested) because everything
that decides the next step comes back: the trainable parameters, AdamW and scheduler state
(Lightning), the step counters (Lightning's loop state), and the position in the training
data (``ResumableSampler``: the order of an epoch is a pure function of seed and epoch,
and the batches an interrupted epoch already consumed are skipped).

Checkpoints are written atomically (``run/trainer.AtomicCheckpointIO``), so a run killed while saving
keeps its previous ``last.ckpt``; ``read_checkpoint`` turns a truncated file, a foreign one,
or one from another method or model into one ``CheckpointError`` before training starts.
A checkpoint is data: it is loaded with ``weights_only=True``, so a pickle that would build
arbitrary objects or call functions is refused (and reported as such), never run.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch

# where in the data: data/resumable.py and data/datamodule.py; re-exported for the callers that
# import them from here (packed sweeps, tests)
from prefixlab.data.datamodule import ResumableDataModule  # noqa: F401
from prefixlab.data.resumable import ResumableDataLoader, ResumableSampler  # noqa: F401
from prefixlab.methods import checkpoint_keys
from prefixlab.training import resume_settings

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


class CheckpointError(ValueError):
    """A checkpoint to resume from is missing, unreadable, or made by another run setup."""


class ResumeSettingsError(CheckpointError):
    """A resume whose result-changing settings differ from its checkpoint's (``resume_settings``)."""


# ---- which checkpoint ----------------------------------------------------------------------
def find_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """``resume``: None (start fresh), ``auto`` (``<run_dir>/checkpoints/last.ckpt`` if it
    exists, else start fresh with a message), or the path of a checkpoint (must exist)."""
    if resume is None:
        return None
    if resume == "auto":
        path = Path(run_dir) / LAST_CHECKPOINT
        if path.is_file():
            return path
        print(f"resume=auto: no checkpoint at {path}, starting fresh")
        return None
    path = Path(resume).expanduser()
    if not path.exists():
        raise CheckpointError(f"resume={resume!r}: no such file")
    if not path.is_file():
        raise CheckpointError(f"resume={resume!r} is a folder; give the .ckpt file (e.g. {path / 'last.ckpt'})")
    return path


# ---- is it usable ------------------------------------------------------------------------
# Keys of the module's hyperparameters that must match for the trainable state to fit; the
# method's are ``name`` and every registered method's ``checkpoint_keys`` (``prefixlab.methods``).
_MUST_MATCH = {
    "model": ("name_or_path", "random_init", "config_overrides"),
}


_PICKLE_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}


def _globals_in_pickle(stream) -> list[str]:
    """The classes and functions one pickle names (GLOBAL, INST, STACK_GLOBAL), read from its
    opcodes with pickletools: nothing is unpickled. Raises ValueError for a stream that is not a
    whole pickle."""
    import pickletools

    names: list[str] = []
    recent: list[Any] = []  # what each op pushed (strings kept: STACK_GLOBAL takes the last two)
    memo: dict[int, Any] = {}
    for opcode, arg, _ in pickletools.genops(stream):
        op = opcode.name
        if op in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            names.append(f"{module}.{name}")
            recent.append(None)
        elif op == "STACK_GLOBAL":
            module, name = recent[-2:] if len(recent) >= 2 else (None, None)
            names.append(f"{module if isinstance(module, str) else '?'}.{name if isinstance(name, str) else '?'}")
            recent.append(None)
        elif op in _PICKLE_STRINGS:
            recent.append(arg if isinstance(arg, str) else None)
        elif op == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif op in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = recent[-1] if recent else None
        elif op in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(arg))
        elif op not in ("PROTO", "FRAME", "STOP"):
            recent.append(None)
    return names


def _refused_globals(path: Path) -> list[str]:
    """The classes and functions a checkpoint's pickles name that ``torch.load(weights_only=True)``
    refuses (torch's allowlist of tensor-rebuilding and container types aside), found without
    unpickling anything; [] when there are none or the pickles cannot be parsed (a damaged file)."""
    found: list[str] = []
    try:
        if zipfile.is_zipfile(path):  # torch's format: the object pickle is <archive>/data.pkl
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    if member.endswith(".pkl"):
                        with archive.open(member) as stream:
                            found += _globals_in_pickle(stream)
        else:  # a bare pickle, or torch's legacy format: several pickles, then raw tensor bytes
            with open(path, "rb") as stream:
                while stream.peek(1):  # b"" at the end of the file
                    try:
                        found += _globals_in_pickle(stream)
                    except ValueError:
                        break
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    try:
        from torch._weights_only_unpickler import _get_allowed_globals, _get_user_allowed_globals

        allowed = {*_get_allowed_globals(), *_get_user_allowed_globals()}
    except (ImportError, AttributeError):  # another torch: judge by module
        allowed = None
    refused = []
    for name in found:
        name = "builtins." + name[len("__builtin__."):] if name.startswith("__builtin__.") else name
        module = name.rsplit(".", 1)[0]
        ok = name in allowed if allowed is not None else module.split(".")[0] in ("torch", "collections", "builtins", "_codecs")
        if not ok and name not in refused:
            refused.append("".join(c if c.isprintable() else "?" for c in name)[:80])
    return sorted(refused, key=lambda n: n.startswith("torch."))  # a foreign module first: the likely payload


def read_checkpoint(path: Path, model: dict, method: dict, task_name: str, settings: dict | None = None,
                    allow: Sequence[str] = ()) -> dict[str, Any]:
    """Load ``path`` and check that it is a prefixlab training checkpoint for this model, method
    and task, and (given ``settings``, ``resume_settings.result_settings`` of this run) that every
    result-changing setting matches the checkpoint's, except the keys in ``allow``.
    Returns {"global_step", "shapes": {name: shape of each saved trainable tensor},
    "changes": {key: [checkpoint's value, this run's]} of the allowed keys that differ}.
    Raises CheckpointError naming the file and what is wrong (ResumeSettingsError: every differing key)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); the run that wrote it was killed while saving")
    if zipfile.is_zipfile(path):  # torch's format: a zip whose members carry CRC32s torch.load never checks
        try:
            damaged = zipfile.ZipFile(path).testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            damaged = f"an unreadable zip entry ({error})"
        if damaged:
            raise CheckpointError(f"checkpoint {path} is corrupted: {damaged} fails its checksum; "
                                  "resume from another checkpoint or start fresh (resume=null)")
    try:
        # weights_only: a checkpoint is data; never run code from a file found on disk
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        refused = _refused_globals(path)
        if refused:  # not damage: the pickle asks to build objects / call functions (a payload), and nothing ran
            raise CheckpointError(
                f"checkpoint {path} contains pickled code or objects ({', '.join(refused[:3])}"
                f"{' ...' if len(refused) > 3 else ''}) that prefixlab refuses to load: checkpoints are read as data "
                "only (torch.load weights_only=True), so none of it ran; resume from a checkpoint prefixlab wrote, "
                "or start fresh (resume=null)"
            ) from error
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {reason[:200]}); "
            "it is truncated or corrupted: resume from another checkpoint or start fresh (resume=null)"
        ) from error
    missing = [k for k in ("state_dict", "hyper_parameters", "global_step", "loops", "optimizer_states")
               if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a prefixlab training checkpoint (it lacks {', '.join(missing)})")
    saved = checkpoint["hyper_parameters"]
    if saved.get("task_name") != task_name:
        raise CheckpointError(f"checkpoint {path} was made for task {saved.get('task_name')!r}, this run is {task_name!r}")
    current = {"model": model, "method": method}
    differing = {}  # key -> (checkpoint's value, this run's); all of them go into one error
    for group, keys in {**_MUST_MATCH, "method": checkpoint_keys(method.get("name"))}.items():  # the trainable state's shape
        for key in keys:
            was, now = saved.get(group, {}).get(key), current[group].get(key)
            if was != now:
                differing[f"{group}.{key}"] = (was, now)
    if settings is not None:
        recorded = checkpoint.get(resume_settings.SETTINGS_KEY)
        if isinstance(recorded, dict):
            differing.update({k: v for k, v in resume_settings.differences(recorded, settings).items() if k not in differing})
        else:
            print(f"prefixlab-train: warning: checkpoint {path} records no run settings (written before prefixlab "
                  "recorded them): only its model, method and task are checked, not optim, seed, data sizes or trainer",
                  file=sys.stderr)
    refused = {key: values for key, values in differing.items() if key not in allow}
    if refused:
        raise ResumeSettingsError(resume_settings.refusal(path, refused))
    shapes = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    changes = {key: [was, now] for key, (was, now) in differing.items()}
    return {"global_step": int(checkpoint["global_step"]), "shapes": shapes, "changes": changes}


def check_trainable_state(path: Path, saved_shapes: dict[str, tuple], module: torch.nn.Module) -> None:
    """The checkpoint holds exactly the module's checkpoint state, with the same shapes (its
    ``state_dict``: trainable tensors and the prefix encoder, never frozen backbone weights,
    ``FrozenBackboneModule.state_dict``), so loading it cannot fail halfway with a torch traceback."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    absent = sorted(set(expected) - set(saved_shapes))
    foreign = sorted(set(saved_shapes) - set(expected))
    wrong = sorted(n for n in set(expected) & set(saved_shapes) if expected[n] != saved_shapes[n])
    if absent or foreign or wrong:
        parts = []
        if absent:
            parts.append(f"missing {', '.join(absent[:3])}{' ...' if len(absent) > 3 else ''}")
        if foreign:
            parts.append(f"unexpected {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}")
        if wrong:
            parts.append("; ".join(f"{n} is {list(saved_shapes[n])}, the model needs {list(expected[n])}" for n in wrong[:3]))
        raise CheckpointError(f"checkpoint {path} does not fit this model: {'; '.join(parts)}")
