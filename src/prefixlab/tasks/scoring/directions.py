"""Which way each metric is better: the one table that the sweep report (``prefixlab.sweeps``)
and the Optuna callback (``sweeps/optuna_callbacks.py``) both read.

A metric is named as logged, ``val/<name>`` or ``test/<name>``; only ``<name>`` counts, and a
``zero_shot_`` prefix (the frozen LM's score before training) goes the way of the metric itself.
Every name a task reports (``metric_names`` of the tasks in ``prefixlab.tasks``, checked by a
test) and the losses are in ``DIRECTIONS``. A name that is not in it but has a word of a
lower-is-better name (``train_loss``, ``loss_epoch``, ``char_error``) is lower-is-better; any
other name is unknown: ``direction`` returns None (the Optuna callback then leaves the choice
to the user, the report treats it as higher-is-better).
"""

from __future__ import annotations

import re

MAXIMIZE, MINIMIZE = "maximize", "minimize"

DIRECTIONS: dict[str, str] = {
    # generated text (tasks/scoring): ROUGE (rouge-score), BLEU, NIST, METEOR, CIDEr (the E2E script)
    "rouge1": MAXIMIZE,
    "rouge2": MAXIMIZE,
    "rougeL": MAXIMIZE,
    "rougeLsum": MAXIMIZE,
    "bleu": MAXIMIZE,
    "nist": MAXIMIZE,
    "meteor": MAXIMIZE,
    "cider": MAXIMIZE,
    # classification, question answering
    "accuracy": MAXIMIZE,
    "macro_f1": MAXIMIZE,
    "exact_match": MAXIMIZE,
    "f1": MAXIMIZE,
    # losses and error rates
    "loss": MINIMIZE,
    "perplexity": MINIMIZE,
    "ppl": MINIMIZE,
    "error": MINIMIZE,
    "wer": MINIMIZE,
    "cer": MINIMIZE,
    "ter": MINIMIZE,
}
_LOWER_WORDS = frozenset(name for name, way in DIRECTIONS.items() if way == MINIMIZE)


def metric_name(metric: str) -> str:
    """``rougeL`` for ``test/rougeL`` and ``val/zero_shot_rougeL``."""
    return metric.rsplit("/", 1)[-1].removeprefix("zero_shot_")


def direction(metric: str) -> str | None:
    """``maximize`` or ``minimize`` for a metric such as ``val/rougeL`` or ``test/loss``; None if unknown."""
    name = metric_name(metric)
    if name in DIRECTIONS:
        return DIRECTIONS[name]
    if _LOWER_WORDS.intersection(re.split(r"[^a-z0-9]+", name.lower())):
        return MINIMIZE
    return None


def lower_is_better(metric: str) -> bool:
    """Losses and error rates go down; every other metric (ROUGE, BLEU, accuracy, F1, unknown ones) goes up."""
    return direction(metric) == MINIMIZE
