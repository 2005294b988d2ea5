"""Tiny random models for the engine tests: the shared builders of tests/tiny_models.py."""

from __future__ import annotations

from tiny_models import CAUSAL_FAMILIES as FAMILIES, PAD, VOCAB, build_lm, pad_rows, random_rows  # noqa: F401  (imported by the engine tests)

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")

# One intra-op thread for every test: tests/conftest.py sets it for the whole suite.
