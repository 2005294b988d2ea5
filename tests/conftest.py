import os

# Tests never reach for the hub: a missing model must fail at once, not after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "PYTEST_XDIST_WORKER" in os.environ:
    # each worker already has a core: the CLIs it starts (cli tests) get one torch thread too
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import fcntl
import subprocess

import pytest
import torch

# The models under test are tiny: intra-op threads only cost, and on a busy 2-core machine (or
# two xdist workers) they oversubscribe badly (an engine test: 95 s with 2 threads beside a
# training run, 2 s with 1). Subprocesses (cli tests) choose their own.
torch.set_num_threads(1)


def pytest_sessionstart(session):
    """Under pytest-xdist (`make test`, `make test-fast`), each worker makes sure of the converted
    SmolLM2 here, one at a time: on a fresh machine two workers would otherwise both dequantize it on
    first use (safe: the folder is renamed into place atomically; but twice the work)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return  # one process: the first test that needs the model converts it
    from prefixlab.training.model_loading import SMOLLM2, ModelNotFoundError, cache_root, resolve

    lock = cache_root() / "models" / ".convert.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        try:
            resolve(SMOLLM2)
        except ModelNotFoundError:
            pass  # the package is missing: every test that needs the model says so itself


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _subprocesses_only_in_cli_tests(request, monkeypatch):
    """`make test-fast` keeps out the `cli` marker: a test that starts a process (an interpreter, a
    JVM) without that marker is slow in the fast set, so it fails here, naming the marker it needs."""
    if request.node.get_closest_marker("cli") is not None:
        return

    def refuse(self, args, *rest, **kwargs):
        # pytest.fail raises a BaseException: no `except Exception` in the code under test swallows it
        pytest.fail(f"{request.node.nodeid} starts a subprocess ({str(args)[:120]}): "
                    f"mark the test @pytest.mark.cli (make test-fast skips those)", pytrace=False)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The embedded SmolLM2 converted into the cache (once per machine)."""
    from prefixlab.training.model_loading import SMOLLM2, resolve

    return resolve(SMOLLM2)


@pytest.fixture(scope="session")
def tiny_models():
    """tests/tiny_models.py: the tiny random GPT-2 / Llama / BART / T5 builders shared by the suite."""
    import tiny_models

    return tiny_models


@pytest.fixture(autouse=True)
def _no_hydra_config_from_another_test():
    """Hydra keeps the running job's config in a process-wide singleton (HydraConfig), which an
    in-process Hydra run leaves set. A later test on the same xdist worker that calls ``train``
    directly would read it (``train`` asks it whether it runs in a sweep) and fail, depending on
    which test files that worker happened to run before. Each test starts and ends without one."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    yield
    HydraConfig.instance().cfg = None
