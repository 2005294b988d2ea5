"""Deterministic splits by group key: every row of one input lands in the same split."""

from __future__ import annotations

import random


def split_by_key(keys, seed: int, validation_share: float = 0.1, test_share: float = 0.1) -> dict[str, str]:
    """Map each distinct key to train / validation / test: the sorted keys are shuffled with
    ``random.Random(seed)`` and cut 80/10/10 (by default), so the result depends only on the
    set of keys and the seed, never on file order. Each of validation and test gets at least
    one key when there are three or more."""
    ordered = sorted(set(keys))
    random.Random(seed).shuffle(ordered)
    n = len(ordered)
    n_test = max(1, round(n * test_share)) if n >= 3 else 0
    n_val = max(1, round(n * validation_share)) if n >= 3 else 0
    assignment = {}
    for i, key in enumerate(ordered):
        assignment[key] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    return assignment


def carve(keys, seed: int, share: float) -> set:
    """The keys held out of a training split (e.g. a validation split carved from train): ``share``
    of the distinct keys (at least one when there are two or more), chosen like ``split_by_key``
    (sorted, then ``random.Random(seed)`` shuffled), so rows with the same key stay together."""
    ordered = sorted(set(keys))
    random.Random(seed).shuffle(ordered)
    n = max(1, round(len(ordered) * share)) if len(ordered) >= 2 else 0
    return set(ordered[:n])
