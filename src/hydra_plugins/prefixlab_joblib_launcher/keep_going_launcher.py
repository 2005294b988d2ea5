"""``launcher=joblib``: Hydra's joblib launcher, except that every job runs in its own process,
so a job killed from outside (the OOM killer, ``kill -9``) ends only itself: the other jobs run
on, keep their results, and the sweep summary names the killed job (prefixlab.sweeps.joblib_sweep)."""

from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


class KeepGoingJoblibLauncher(JoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from prefixlab.sweeps.joblib_sweep import launch

        return launch(self, job_overrides, initial_job_idx)
