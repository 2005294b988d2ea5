"""prefixlab.training.cpu_memory: freed activations are reused instead of being mapped and zero-filled
again at every step (the cause of the packed step's extra CPU time; see the module docstring).

Each case runs in a fresh interpreter, since the setting lasts for the whole process."""

import os
import subprocess
import sys
import textwrap

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("glibc malloc only", allow_module_level=True)

pytestmark = pytest.mark.cli  # every case is a fresh interpreter in a subprocess: `make test-fast` skips these

# Four "steps" that each allocate, touch and free 16 blocks of 40 MB (above glibc's largest mmap
# threshold, 32 MiB, like the packed step's MLP activations); prints the page faults of the last.
# (With the setting, the heap settles within a few steps: about 48k, 10k, then 0 faults here.)
STEPS = textwrap.dedent(
    """
    import resource, sys
    import torch
    from prefixlab.training.cpu_memory import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    def step():
        blocks = [torch.ones(10_000_000) for _ in range(16)]  # 40 MB each, every page touched
        del blocks
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)
PAGES_PER_STEP = 16 * 40_000_000 // 4096  # about 156,000 if every page faults again


def last_step_faults(mode: str, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    result = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True,
                            env={**clean, **env}, check=True)
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


def test_freed_blocks_are_reused_at_the_next_step():
    applied, faults = last_step_faults("keep")
    assert applied
    assert faults < PAGES_PER_STEP // 20, f"{faults} page faults in the fourth step: the blocks were not reused"


def test_without_it_the_big_blocks_fault_again():
    # The reference: glibc's default returns each block to the OS, so every step faults on
    # (nearly) every page again. If this ever stops holding, the setting is no longer needed.
    applied, faults = last_step_faults("default")
    assert not applied
    assert faults > PAGES_PER_STEP // 2


def test_the_opt_out_and_the_users_own_tuning_win():
    assert last_step_faults("keep", PREFIXLAB_KEEP_FREED_MEMORY="0")[0] is False
    assert last_step_faults("keep", MALLOC_ARENA_MAX="2")[0] is False
