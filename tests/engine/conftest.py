"""Tiny random models for the engine tests: the shared builders of tests/tiny_models.py."""

from __future__ import annotations

import pytest
import torch

from tiny_models import CAUSAL_FAMILIES as FAMILIES, PAD, VOCAB, build_lm  # noqa: F401  (imported by the engine tests)

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


@pytest.fixture(autouse=True)
def _one_thread():
    """Every engine test, once per test: the models are tiny, so intra-op threads only cost, and on a
    busy 2-core machine they oversubscribe badly (95 s with 2 threads next to a training run, 2 s with 1)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
