"""Deterministic splits by group key: every row of one input lands in the same split."""

from __future__ import annotations

import math
import random

# train / validation / test shares of a by-input split when the data ships as one file.
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def check_fractions(fractions) -> str | None:
    """None if ``fractions`` are three shares (train, validation, test), each in (0, 1], summing to 1; else what is wrong (for a one-line error naming the setting)."""
    values = list(fractions)
    if len(values) != 3:
        return f"expected three shares [train, validation, test], got {len(values)}"
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1 for v in values):
        return "each share must be a number in [0, 1]"
    if abs(sum(values) - 1.0) > 1e-6:
        return f"the shares must sum to 1 (they sum to {sum(values):.6g})"
    if min(values) <= 0:
        return "each split needs a share above 0"
    return None


def split_by_key(keys, seed: int, validation_share: float = 0.1, test_share: float = 0.1) -> dict[str, str]:
    """Map each distinct key to train / validation / test: the sorted keys are shuffled with
    ``random.Random(seed)`` and cut 80/10/10 (by default), so the result depends only on the
    set of keys and the seed, never on file order. Each of validation and test gets at least
    one key when there are three or more.

    Test takes the first keys of the shuffle, validation the next ones: a larger test share only
    adds keys to the test split (the 10% test keys are among the 45% ones of the same seed)."""
    ordered = sorted(set(keys))
    random.Random(seed).shuffle(ordered)
    n = len(ordered)
    n_test = max(1, round(n * test_share)) if n >= 3 else 0
    n_val = max(1, round(n * validation_share)) if n >= 3 else 0
    if n_test + n_val >= n and n >= 3:
        raise ValueError(f"{n} keys cannot be split with validation share {validation_share} and test share "
                         f"{test_share}: nothing is left for training")
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
