"""How the Hydra entry points (``prefixlab-train``, ``prefixlab-eval``) end when something goes wrong.

Two places, one rule (one line naming the thing at fault, no traceback):

- ``report_job_errors`` wraps one job (the task function): a signal exits like a process killed by
  it, after saving; a wrong input or a failed run is one ``<app>: error: ...`` line. In a sweep the
  line is printed and the job returns NaN (Hydra's launchers stop the whole sweep on SystemExit);
  its metrics.json says ``status: failed``.
- ``run_hydra`` wraps Hydra itself: errors Hydra raises while composing the config (an unknown key,
  a group option that does not exist) become one line too, with the nearest valid key suggested
  instead of Hydra's "To append to your config use +key=".
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from prefixlab.config import ConfigError


def report_job_errors(app: str, run_dir: Path, job: Callable[[], Any], *, input_errors: Callable[[], tuple[type, ...]] = tuple,
                      keep_folder: Callable[[], tuple[type, ...]] = tuple, log_line: Callable[[str], None] | None = None) -> Any:
    """``job()``'s result, or NaN for a sweep's job that failed on a user error (a single run exits).

    input_errors: gives further exceptions that mean a wrong input (besides ``prefixlab.errors.USER_ERRORS``).
    keep_folder: gives the errors after which nothing is written into ``run_dir`` (another run's folder, a
    refused resume: its metrics.json stays). Both are called only when an error other than a ConfigError
    came: their modules may import torch. log_line: also writes the final line into the job's log file
    (``sys.exit(line)`` prints it only after the job's output stopped going there).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return job()
    except BaseException as error:
        from prefixlab.run.hydra_files import put_back

        # refused before the job accepted the run (train: before preflight passed), in a folder that
        # held a run: Hydra's new .hydra/ files give way to that run's, and nothing else is written
        untouched = put_back(run_dir)
        # a config error (the commonest, found before anything loads) needs no torch import to be reported
        if isinstance(error, ConfigError):
            user_error, failed_run, keep = True, False, untouched
        else:
            from prefixlab.errors import USER_ERRORS
            from prefixlab.training.reliability import RunFailed, RunInterrupted

            if isinstance(error, RunInterrupted):  # exit like a process killed by that signal, after saving
                print(f"{app}: {error}", file=sys.stderr)
                sys.exit(128 + error.signum)
            failed_run = isinstance(error, RunFailed)
            user_error = failed_run or isinstance(error, (*USER_ERRORS, *input_errors()))
            keep = untouched or isinstance(error, keep_folder())
        if not user_error:
            raise
        if not failed_run and not keep:  # RunFailed wrote its own metrics.json
            record_input_error(error, run_dir)
        line = f"{app}: error: {error}"
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            print(line, file=sys.stderr)  # the other jobs of the sweep go on
            return float("nan")
        if log_line is not None:
            log_line(line)
        sys.exit(line)


def run_job(app: str, cfg, job: Callable[[Path], Any], *, input_errors: Callable[[], tuple[type, ...]] = tuple,
            keep_folder: Callable[[], tuple[type, ...]] = tuple) -> Any:
    """One Hydra job of ``app`` (the body of prefixlab-train's and prefixlab-eval's ``hydra_main``):
    unknown keys refused before anything loads, the run folder locked (one run per folder), the job's
    prints also in ``<run dir>/<job name>.log``, and its errors reported by ``report_job_errors``.
    ``job(run_dir)`` returns the value the job hands to Hydra. Another process's folder
    (``RunFolderTaken``) is never written into, whatever ``keep_folder`` adds."""
    from hydra.core.hydra_config import HydraConfig

    from prefixlab.cli.job_log import JobLog
    from prefixlab.cli.strict import check_known_keys
    from prefixlab.run.folder_lock import RunFolderLock, RunFolderTaken

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)

    def locked() -> Any:
        check_known_keys(cfg)  # a `+key=` no schema has: refused before anything loads
        with RunFolderLock(run_dir):  # released however the run ends
            return job(run_dir)

    with JobLog(run_dir / f"{hydra_cfg.job.name}.log") as log:
        return report_job_errors(app, run_dir, locked, input_errors=input_errors,
                                 keep_folder=lambda: (RunFolderTaken, *keep_folder()), log_line=log.line)


def record_input_error(error: BaseException, run_dir: Path) -> None:
    """``status: failed`` in metrics.json, if the run directory takes it (it may be what is wrong)."""
    from prefixlab.run.results import write_results

    try:
        write_results(Path(run_dir), {"status": "failed", "error": f"{type(error).__name__}: {error}", "step": 0}, None)
    except OSError:
        pass


def composition_error_line(error: BaseException) -> str | None:
    """One line for an error Hydra or OmegaConf raised while composing the config; None for other errors.
    An unknown key names the nearest key of its schema (Hydra's own hint, "use +key=", would add a
    key that nothing reads: the strict check then refuses it)."""
    from hydra.errors import HydraException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(error, ValueError) and "Config group override must be a string" in str(error):
        # Hydra parses `size=500` as the integer 500, and a group's option is a file name
        numeric = [a for a in sys.argv[1:] if re.fullmatch(r"[\w/@.-]+=[-+]?\d[\d.e+-]*(,[-+]?\d[\d.e+-]*)*", a)
                   and "." not in a.split("=", 1)[0]]
        named = f" ({', '.join(numeric)})" if numeric else ""
        return (f"a config group's option was read as a number{named}: an option is a file name, so quote it "
                "(group='500', or group='50','100' in a sweep)")
    if isinstance(error, ValueError) and str(error).startswith("Only one of --run, --multirun"):
        return str(error)  # e.g. -m with --cfg: Hydra's own sentence is the whole story
    if not isinstance(error, (HydraException, OmegaConfBaseException)):
        return None
    unknown = error
    while unknown is not None and not (isinstance(unknown, (ConfigAttributeError, ConfigKeyError))
                                       and getattr(unknown, "full_key", None)):
        unknown = unknown.__cause__ or unknown.__context__
    if unknown is not None:  # a key no schema has: on the command line, or in a config file (In 'experiment/foo': ...)
        from prefixlab.cli.strict import unknown_key_message

        source = re.match(r"In '([^']+)':", str(error))
        return unknown_key_message(str(unknown.full_key), getattr(unknown, "object_type", None)) + (
            f" (in {source.group(1)}.yaml)" if source else "")
    cause = error.__cause__
    text = str(error)
    if isinstance(cause, OmegaConfBaseException) and str(cause).split("\n", 1)[0] not in text:
        text += "\n" + str(cause).split("\n", 1)[0]
    # Hydra's messages run over several lines ("Available options in 'method':\n\tadapter\n\t...")
    parts = [part.strip() for part in text.replace("\t", " ").splitlines() if part.strip()]
    if "Config search path:" in parts:  # where Hydra looked: the --info output, not the error
        parts = parts[:parts.index("Config search path:")]
    missing = re.search(r"Could not find '([^']+)/([^']+)'", parts[0]) if parts else None
    if missing and len(parts) > 2 and parts[1].lower().startswith("available options"):
        group, wanted = missing.groups()
        # the schemas stored under the group (prefix_schema) are no option a user chooses
        options = [o for o in parts[2:] if not o.endswith("schema")]
        close = difflib.get_close_matches(wanted, options, n=1, cutoff=0.6)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"{group}={wanted} is not an option of {group} (conf/{group}/); {hint}its options: {', '.join(options)}"
    return "; ".join(parts)


def run_hydra(app: str, hydra_main: Callable[[], Any]) -> None:
    """``hydra_main()`` with Hydra's composition errors as one line (``<app>: error: ...``, exit code 1),
    and a sweep's summary when a signal stopped it.

    Hydra prints such errors itself (and a hint about HYDRA_FULL_ERROR) and exits, unless
    HYDRA_FULL_ERROR is set; it is set here for the call so that the error reaches this function.
    Any other exception keeps its full traceback: that is a bug, not a wrong input.
    """
    from prefixlab.cli.sweep_callback import print_summary_if_cut_short

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except SystemExit as stop:  # a sweep stopped by a signal still ends with its summary (Hydra's callback never sees it)
        print_summary_if_cut_short(stop.code)
        raise
    except Exception as error:
        # an OmegaConf error raised by the job itself (train's code) is a bug to show in full, not a config typo
        line = None if _raised_in_a_job(error) else composition_error_line(error)
        if line is None or previous == "1":  # the user asked for Hydra's full error
            raise
        sys.exit(f"{app}: error: {line}")
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def _raised_in_a_job(error: BaseException) -> bool:
    """Whether ``error`` passed through Hydra's ``run_job`` (the task function), as Hydra tells them apart."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "run_job":
            return True
        tb = tb.tb_next
    return False
