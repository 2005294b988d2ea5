"""Hydra launcher ``packed``: a sweep's jobs that can share one frozen LM train together.

Selected with ``launcher=packed`` (conf/launcher/packed.yaml). Per batch of jobs from the sweeper:

1. compose every job's config (as the basic launcher does) and check, before anything is
   written or loaded, that each job can be packed (``prefixlab.sweeps.packed.packing_problem``): if
   one cannot, the sweep stops with one line naming the job and the reason, and removes the
   sweep folder that holds only Hydra's multirun.yaml;
2. group the jobs by ``pack_key`` (same model settings, device and precision);
3. a group of one job runs as an ordinary job (``run_job`` with the task function: the
   single-run path, checkpoints included); a larger group gets each job's run directory and
   ``.hydra/`` files from ``run_job`` (a task function that only records them), then trains
   in one ``prefixlab.sweeps.packed.train_packed`` call, with its checkpoints in
   ``<sweep dir>/pack-<first job number>/checkpoints/last.ckpt`` (``resume=auto`` and the same
   ``hydra.sweep.dir`` continue it); the pack's folder and every job's folder are held with
   ``RunFolderLock`` while it runs, and a signal stops the sweep with exit code 128 + signum;
4. each job's JobReturn holds its optimized metric, or NaN for a job that failed (recorded in
   its metrics.json), so the sweep goes on, as the single-run path does in a multirun.

Hydra's job callbacks see a packed job's start and end when its directory is set up, before
it trains. This file is the only place where the packed path touches Hydra.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this file without
# registering it in sys.modules, where dataclasses look string annotations up.
import logging
import math
import signal
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NoReturn, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.prefixlab_packed_launcher.packed_launcher.PackedLauncher"
    # rows per forward of a packed step (prefixlab.sweeps.packed.choose_rows_per_forward): null = the pack's
    # largest task.batch_size on a CPU, all rows of the step in one forward on a GPU
    rows_per_forward: Optional[int] = None


ConfigStore.instance().store(group="hydra/launcher", name="packed", node=PackedLauncherConf, provider="prefixlab")


def _task_config(sweep_config: DictConfig) -> DictConfig:
    task_cfg = sweep_config.copy()
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def _settings(task_cfg: DictConfig):
    """The job's typed config, or None if it does not convert (its own run reports why)."""
    try:
        return OmegaConf.to_object(task_cfg)
    except Exception:
        return None


class PackedLauncher(Launcher):
    def __init__(self, rows_per_forward: Optional[int] = None) -> None:
        super().__init__()
        self.rows_per_forward = rows_per_forward
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from prefixlab.sweeps.packed import pack_key, packing_problem, rows_per_forward_problem

        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

        rows_problem = rows_per_forward_problem(self.rows_per_forward)
        if rows_problem:  # before any job folder is made
            self._refuse(rows_problem)
        configs: List[DictConfig] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            configs.append(sweep_config)
        settings = [_settings(_task_config(c)) for c in configs]
        for idx, (overrides, job) in enumerate(zip(job_overrides, settings), start=initial_job_idx):
            problem = job and packing_problem(job)
            if problem:  # before any job folder is made or any model loads
                self._refuse(f"job #{idx} ({' '.join(filter_overrides(overrides))}): {problem}")

        groups: Dict[str, List[int]] = {}
        for i, job in enumerate(settings):
            # a job whose config does not convert runs alone, where its error is reported
            groups.setdefault(pack_key(job) if job is not None else f"alone-{i}", []).append(i)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(configs)} jobs in {len(groups)} pack(s): "
                 + "; ".join(",".join(f"#{initial_job_idx + i}" for i in g) for g in groups.values()))
        returns: List[Optional[JobReturn]] = [None] * len(configs)
        for members in groups.values():
            if len(members) == 1:
                i = members[0]
                log.info(f"\t#{initial_job_idx + i} : {' '.join(filter_overrides(job_overrides[i]))} (alone)")
                returns[i] = self._run(configs[i], self.task_function)
            else:
                for i, ret in zip(members, self._launch_pack([configs[i] for i in members])):
                    returns[i] = ret
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns  # type: ignore[return-value]

    def _refuse(self, problem: str) -> NoReturn:
        """Stop the sweep before any job runs. Hydra's sweeper has already written the sweep folder's
        multirun.yaml; a folder holding nothing else is removed, so that a refused sweep leaves no
        folder for reports and scorecards to trip over (a folder with jobs from before is kept)."""
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        if sweep_dir.is_dir() and [p.name for p in sweep_dir.iterdir()] == ["multirun.yaml"]:
            (sweep_dir / "multirun.yaml").unlink()
            sweep_dir.rmdir()
        sys.exit(f"prefixlab-train: error: {problem}")

    def _run(self, sweep_config: DictConfig, task_function: TaskFunction) -> JobReturn:
        assert self.hydra_context is not None
        return run_job(hydra_context=self.hydra_context, task_function=task_function, config=sweep_config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def _launch_pack(self, configs: List[DictConfig]) -> List[JobReturn]:
        from prefixlab.errors import USER_ERRORS
        from prefixlab.run.folder_lock import RunFolderLock
        from prefixlab.sweeps.packed import PackedJob, PackingError, optimized_value, train_packed
        from prefixlab.sweeps.packed_module import CHECKPOINT
        from prefixlab.training.reliability import RunInterrupted
        from prefixlab.cli.train import wandb_identity
        from prefixlab.cli.strict import check_known_keys

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        # named after its first job, so that a rerun of the same sweep finds the same pack's checkpoint
        pack_dir = sweep_dir / f"pack-{configs[0].hydra.job.num}"
        resume = _settings(_task_config(configs[0])).resume
        with ExitStack() as held:
            try:  # one process per pack folder, and per job folder (below), however it ends
                held.enter_context(RunFolderLock(pack_dir))
            except USER_ERRORS as error:
                sys.exit(f"prefixlab-train: error: {error}")
            if resume is None and (pack_dir / CHECKPOINT).is_file():  # never overwrite a pack's checkpoint
                sys.exit(f"prefixlab-train: error: {pack_dir} already holds a pack's checkpoint ({pack_dir / CHECKPOINT}); "
                         f"resume it with resume=auto hydra.sweep.dir={sweep_dir}, or write elsewhere (another hydra.sweep.dir)")

            def record(task_cfg: DictConfig):
                # runs inside run_job, which has made the job's folder, written .hydra/ and set
                # HydraConfig to this job's: resolve here, where ${hydra:...} means this job
                run_dir = Path(HydraConfig.get().runtime.output_dir)
                check_known_keys(task_cfg)  # a `+key=` no schema has: this job fails, as on the single-run path
                held.enter_context(RunFolderLock(run_dir))
                return PackedJob(settings=OmegaConf.to_object(task_cfg), resolved=OmegaConf.to_container(task_cfg, resolve=True),
                                 run_dir=run_dir, logger_identity=wandb_identity())

            prepared = []
            for config in configs:
                overrides = " ".join(filter_overrides(OmegaConf.to_container(config.hydra.overrides.task)))
                log.info(f"\t#{config.hydra.job.num} : {overrides} (packed)")
                prepared.append(self._run(config, record))
            packable = [r for r in prepared if r.status == JobStatus.COMPLETED]
            try:
                results = (train_packed([r.return_value for r in packable], rows_per_forward=self.rows_per_forward,
                                        pack_dir=pack_dir) if packable else [])
            except RunInterrupted as stop:  # as the single-run path: exit like a process killed by that signal
                where = f"checkpoint {stop.checkpoint}" if stop.checkpoint and Path(stop.checkpoint).is_file() else "no checkpoint yet"
                print(f"prefixlab-train: pack {pack_dir.name} interrupted by {signal.Signals(stop.signum).name} after step "
                      f"{stop.step}; {where} (continue with resume=auto and the same hydra.sweep.dir={sweep_dir})",
                      file=sys.stderr)
                sys.exit(128 + stop.signum)
            except (*USER_ERRORS, PackingError) as error:  # the pack's checkpoint does not fit: before anything loaded
                from prefixlab.run.hydra_files import put_back

                for job in packable:  # refused: job folders that held a run get their .hydra/ back, as single runs do
                    put_back(job.return_value.run_dir)
                sys.exit(f"prefixlab-train: error: {error}")
        for ret, metrics in zip(packable, results):
            optimized_metric = ret.return_value.settings.optimized_metric
            ret.return_value = optimized_value(metrics, optimized_metric)
        for ret, config in zip(prepared, configs):
            if ret.status != JobStatus.COMPLETED:  # its config did not convert: as the single-run path, NaN
                print(f"prefixlab-train: error: {ret._return_value}", file=sys.stderr)
                job_dir = OmegaConf.select(config, "hydra.runtime.output_dir")  # set by run_job
                from prefixlab.run.folder_lock import RunFolderTaken
                from prefixlab.run.hydra_files import put_back

                # refused in a folder that held a run (its .hydra/ comes back), or another process's: nothing written there
                if job_dir and not put_back(Path(job_dir)) and not isinstance(ret._return_value, RunFolderTaken):
                    from prefixlab.cli.errors import record_input_error

                    record_input_error(ret._return_value, Path(job_dir))  # status: failed, for the summary and report
                ret.return_value, ret.status = math.nan, JobStatus.COMPLETED
        return prepared
