"""Is a difference between runs real? A paired bootstrap over the test inputs, matched by id.

Two runs are compared on the same test inputs: their ``predictions.jsonl`` rows (``id``,
``prediction``, ``references``) are matched by ``id``, never by row position, and a run whose ids
differ from the other's is an error (one line naming both files). Each resample draws n test
inputs with replacement, the SAME inputs for every run, and recomputes the corpus metric of each
run on them; the spread of the resampled difference is the test set's noise, the inputs'
difficulty cancelling out (Koehn 2004, "Statistical significance tests for machine translation
evaluation").

The metrics are the project's own scorers, computed once per test input and summed or averaged
per resample (``METRICS``):

* ``bleu``: the E2E script's corpus BLEU (mteval-v13a, ``scoring.mteval``), x 100;
* ``rougeL``, ``rouge1``, ``rouge2``: rouge-score F1 x 100 with stemming, averaged over inputs
  (``scoring.text.rouge``: headlines, summaries);
* ``e2e_rougeL``: the E2E script's ROUGE-L (coco-caption, ``scoring.coco``; needs Java), what
  e2e / dart / webnlg log as ``rougeL``;
* ``accuracy`` (``scoring.text.classification``), ``exact_match`` and ``f1`` (``scoring.text.squad``).

Several runs of one setting (training seeds, data subsets) form an *arm*: its value is the mean of
its runs' metrics, and each resample also redraws the runs (with replacement; paired by position
across arms, so list the runs of every arm in the same seed / subset order). The interval then
holds the seed noise as well as the test set's. ``contrast`` takes any weighted sum of arms
(``A - B``; ``(A50 - B50) - (A500 - B500)`` for "the gap narrows").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Callable, Sequence, Union

import numpy as np

from prefixlab.sweeps.jobs import ReportError


class SignificanceError(ReportError):
    """Predictions that cannot be compared (missing, malformed, different test inputs): one line."""


@dataclass(frozen=True)
class Predictions:
    """One run's test outputs, in the file's order."""

    path: str
    ids: tuple[str, ...]
    predictions: tuple[str, ...]
    references: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.ids)

    def ordered(self, ids: Sequence[str]) -> "Predictions":
        at = {example_id: i for i, example_id in enumerate(self.ids)}
        rows = [at[example_id] for example_id in ids]
        return Predictions(self.path, tuple(ids), tuple(self.predictions[i] for i in rows),
                           tuple(self.references[i] for i in rows))


SHARED_REFERENCES = "references.jsonl"  # beside archived runs (experiments/<name>/runs/): each input's references once


def read_references(path: Union[str, Path]) -> dict[str, tuple[str, ...]]:
    """A ``references.jsonl`` (rows ``{"id": ..., "references": [...]}``): each test input's references."""
    path = Path(path)
    references: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            example_id, refs = str(row["id"]), tuple(row["references"])
        except (ValueError, KeyError, TypeError) as error:
            raise SignificanceError(f"{path} line {number}: not a references.jsonl row with 'id' and 'references' "
                                    f"({type(error).__name__}: {error})") from None
        if not refs or not all(isinstance(r, str) for r in refs):
            raise SignificanceError(f"{path} line {number}: 'references' must be a non-empty list of text")
        references[example_id] = refs
    return references


def _shared_references(predictions_file: Path) -> tuple[Path | None, dict[str, tuple[str, ...]]]:
    """The nearest ``references.jsonl`` in a folder above a run's predictions (where an archive keeps
    the references its runs share), read; (None, {}) when there is none."""
    for folder in predictions_file.resolve().parents:
        if (folder / SHARED_REFERENCES).is_file():
            return folder / SHARED_REFERENCES, read_references(folder / SHARED_REFERENCES)
    return None, {}


def read_utf8(path: Path) -> str:
    """The file's text (a BOM dropped), or one error naming the file, and the line of a byte that is
    not UTF-8."""
    try:
        raw = path.read_bytes()
        return raw.decode("utf-8-sig")
    except OSError as error:
        raise SignificanceError(f"{path}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise SignificanceError(f"{path} line {line}: not UTF-8 (byte 0x{raw[error.start]:02x}); "
                                f"save the file as UTF-8") from None


def read_predictions(path: Union[str, Path]) -> Predictions:
    """A run's ``predictions.jsonl`` (or its folder): every row needs ``id``, ``prediction`` and
    ``references``; a row without ``references`` takes its input's from the nearest ``references.jsonl``
    in a folder above (how an experiment's archive stores the references its runs share, once)."""
    path = Path(path)
    if path.is_dir():
        path = path / "predictions.jsonl"
    if not path.is_file():
        raise SignificanceError(f"{path}: no such file; give a run folder or its predictions.jsonl")
    text = read_utf8(path)
    ids, predictions, references = [], [], []
    shared: tuple[Path | None, dict[str, tuple[str, ...]]] | None = None  # read at the first row that needs it
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            example_id, prediction = str(row["id"]), row["prediction"]
            refs = tuple(row["references"]) if "references" in row else None
        except (ValueError, KeyError, TypeError) as error:
            raise SignificanceError(f"{path} line {number}: not a predictions.jsonl row with 'id', 'prediction' and "
                                    f"'references' ({type(error).__name__}: {error})") from None
        if refs is None:
            shared = shared or _shared_references(path)
            if example_id not in shared[1]:
                where = shared[0] or f"a {SHARED_REFERENCES} in a folder above it"
                raise SignificanceError(f"{path} line {number}: the row has no 'references' and {where} has none for id "
                                        f"{example_id!r}; restore the archive's {SHARED_REFERENCES} (git checkout)")
            refs = shared[1][example_id]
        if not isinstance(prediction, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise SignificanceError(f"{path} line {number}: 'prediction' must be text and 'references' a non-empty list of text")
        ids.append(example_id)
        predictions.append(prediction.strip())
        references.append(tuple(r.strip() for r in refs))
    seen: set[str] = set()
    for number, example_id in enumerate(ids, start=1):
        if example_id in seen:
            raise SignificanceError(f"{path}: id {example_id!r} appears twice; a run scores each test input once")
        seen.add(example_id)
    if not ids:
        raise SignificanceError(f"{path}: no predictions")
    return Predictions(str(path), tuple(ids), tuple(predictions), tuple(references))


def align(runs: Sequence[Predictions]) -> list[Predictions]:
    """The runs with their rows in sorted id order (so a resample draws the same inputs whatever the
    files' row order). Raises SignificanceError (one line) when a run's set of ids is not the first
    run's, or one input's references differ between runs."""
    first = runs[0].ordered(sorted(runs[0].ids))
    ids = set(first.ids)
    aligned = []
    for run in runs:
        if set(run.ids) != ids:
            only_here, only_first = sorted(set(run.ids) - ids), sorted(ids - set(run.ids))
            raise SignificanceError(
                f"{run.path} scores other test inputs than {first.path} ({len(only_here)} ids only in the former, "
                f"{len(only_first)} only in the latter, e.g. {(only_here or only_first)[0]!r}): a paired comparison needs the "
                "same test set; rerun with the same task.test_size, task.split_seed and task.split_fractions")
        run = run.ordered(first.ids)
        for example_id, ours, theirs in zip(first.ids, first.references, run.references):
            if ours != theirs:
                raise SignificanceError(f"{run.path}: test input {example_id!r} has other references than in {first.path}: "
                                        "the runs read different data (task.data_dir)")
        aligned.append(run)
    return aligned


# ---- metrics: per-input statistics, and the corpus value of their sums -------------------------


@dataclass(frozen=True)
class Metric:
    """``statistics(predictions, references)`` -> an (n, k) array, one row per input; ``corpus(sums, n)``
    -> the metric of a resample whose rows sum to ``sums`` (shape (R, k)), for R resamples at once."""

    name: str
    statistics: Callable[[list[str], list[tuple[str, ...]]], np.ndarray]
    corpus: Callable[[np.ndarray, int], np.ndarray]
    unit: str = "points"


def _bleu_statistics(predictions, references) -> np.ndarray:
    from prefixlab.tasks.scoring.mteval import bleu_counts

    return np.asarray(bleu_counts(predictions, references), dtype=np.int64)


def _bleu_corpus(sums: np.ndarray, n: int) -> np.ndarray:
    from prefixlab.tasks.scoring.mteval import bleu_of_counts

    return np.array([100.0 * bleu_of_counts([tuple(int(v) for v in row)]) for row in sums])


def _mean_corpus(sums: np.ndarray, n: int) -> np.ndarray:
    return 100.0 * sums[:, 0] / n


def _rouge_statistics(key: str):
    def statistics(predictions, references) -> np.ndarray:
        from prefixlab.tasks.scoring.text import _rouge_scorer

        scorer = _rouge_scorer(("rouge1", "rouge2", "rougeL"))
        return np.array([[scorer.score_multi(list(refs), p)[key].fmeasure] for p, refs in zip(predictions, references)])
    return statistics


def _e2e_rouge_statistics(predictions, references) -> np.ndarray:
    from pycocoevalcap.rouge.rouge import Rouge

    from prefixlab.tasks.scoring.coco import coco_tokenized

    tokens, refs = coco_tokenized(predictions, references)  # one JVM start for the whole run
    _, scores = Rouge().compute_score({i: list(r) for i, r in enumerate(refs)}, {i: [p] for i, p in enumerate(tokens)})
    return np.asarray(scores, dtype=float).reshape(-1, 1)


def _accuracy_statistics(predictions, references) -> np.ndarray:
    from prefixlab.tasks.scoring.text import normalize_answer

    return np.array([[float(normalize_answer(p) == normalize_answer(refs[0]))] for p, refs in zip(predictions, references)])


def _squad_statistics(key: str):
    def statistics(predictions, references) -> np.ndarray:
        from prefixlab.tasks.scoring.text import normalize_answer, token_f1

        if key == "exact_match":
            return np.array([[max(float(normalize_answer(p) == normalize_answer(r)) for r in refs)]
                             for p, refs in zip(predictions, references)])
        return np.array([[max(token_f1(p, r) for r in refs)] for p, refs in zip(predictions, references)])
    return statistics


METRICS: dict[str, Metric] = {
    "bleu": Metric("bleu", _bleu_statistics, _bleu_corpus, "BLEU"),
    "rouge1": Metric("rouge1", _rouge_statistics("rouge1"), _mean_corpus, "ROUGE-1"),
    "rouge2": Metric("rouge2", _rouge_statistics("rouge2"), _mean_corpus, "ROUGE-2"),
    "rougeL": Metric("rougeL", _rouge_statistics("rougeL"), _mean_corpus, "ROUGE-L"),
    "e2e_rougeL": Metric("e2e_rougeL", _e2e_rouge_statistics, _mean_corpus, "ROUGE-L"),
    "accuracy": Metric("accuracy", _accuracy_statistics, _mean_corpus, "accuracy points"),
    "exact_match": Metric("exact_match", _squad_statistics("exact_match"), _mean_corpus, "EM points"),
    "f1": Metric("f1", _squad_statistics("f1"), _mean_corpus, "F1 points"),
}


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise SignificanceError(f"metric {name!r} has no bootstrap here; choose one of {', '.join(METRICS)}")
    return METRICS[name]


def corpus_value(run: Predictions, metric: str) -> float:
    """The run's metric on its whole test set (what ``metrics.json`` holds for the same scorer)."""
    m = get_metric(metric)
    return float(m.corpus(m.statistics(list(run.predictions), list(run.references)).sum(axis=0, keepdims=True), len(run))[0])


# ---- the bootstrap -------------------------------------------------------------------------------

POWER = 0.8  # the power at which the minimum detectable effect is stated


@dataclass(frozen=True)
class Estimate:
    """A contrast of arms (e.g. A - B) on the full test set, with its bootstrap interval.

    ``p_value``: two-sided, of "the contrast is 0" (the share of resampled contrasts at least as far
    from the estimate as the estimate is from 0). ``se``: the resampled contrasts' standard deviation.
    ``mde``: the smallest true contrast this test set detects with 80% power at the interval's
    level, (z(1 - alpha/2) + z(0.8)) x se: effects below it come out ``unresolved`` more often than not."""

    metric: str
    value: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    n_test: int
    runs: int
    resamples: int
    confidence: float

    @property
    def mde(self) -> float:
        z = NormalDist().inv_cdf
        return (z(1 - (1 - self.confidence) / 2) + z(POWER)) * self.se


Arm = Union[Predictions, Sequence[Predictions]]


def _runs(arm: Arm) -> list[Predictions]:
    runs = [arm] if isinstance(arm, Predictions) else list(arm)
    if not runs:
        raise SignificanceError("an arm of the comparison has no runs")
    return runs


def contrast(terms: Sequence[tuple[float, Arm]], metric: str = "bleu", resamples: int = 1000, seed: int = 0,
             confidence: float = 0.95, resample_runs: bool = True, chunk: int = 200) -> Estimate:
    """sum(weight x arm value) with a paired bootstrap interval over the test inputs (matched by id)
    and, for arms of several runs, over the runs (``resample_runs``)."""
    if not terms:
        raise SignificanceError("a contrast needs at least one arm")
    if not 0 < confidence < 1:
        raise SignificanceError(f"confidence={confidence}: must be between 0 and 1, e.g. 0.95")
    m = get_metric(metric)
    arms = [(float(weight), _runs(arm)) for weight, arm in terms]
    flat = align([run for _, runs in arms for run in runs])
    n = len(flat[0])
    stats, start = [], 0
    for _, runs in arms:
        stats.append([m.statistics(list(r.predictions), list(r.references)) for r in flat[start:start + len(runs)]])
        start += len(runs)
    rng = np.random.default_rng(seed)
    inputs = rng.integers(0, n, size=(resamples, n))
    # one draw of runs per arm size, shared by the arms of that size: runs are paired by position
    picks = {k: rng.integers(0, k, size=(resamples, k)) for k in sorted({len(runs) for _, runs in arms}) if k > 1}
    estimate = np.zeros(1)
    resampled = np.zeros(resamples)
    for (weight, runs), arm_stats in zip(arms, stats):
        full = np.array([m.corpus(s.sum(axis=0, keepdims=True), n)[0] for s in arm_stats])
        per_run = np.empty((len(runs), resamples))
        for j, s in enumerate(arm_stats):
            for lo in range(0, resamples, chunk):
                per_run[j, lo:lo + chunk] = m.corpus(s[inputs[lo:lo + chunk]].sum(axis=1), n)
        if len(runs) > 1 and resample_runs:
            arm_values = np.take_along_axis(per_run, picks[len(runs)].T, axis=0).mean(axis=0)
        else:
            arm_values = per_run.mean(axis=0)
        estimate += weight * full.mean()
        resampled += weight * arm_values
    value = float(estimate[0])
    alpha = 1 - confidence
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    far = np.sum(np.abs(resampled - value) >= abs(value) - 1e-12)
    return Estimate(metric, value, float(low), float(high), float((1 + far) / (1 + resamples)),
                    float(resampled.std(ddof=1)) if resamples > 1 else 0.0, n, len(flat), resamples, confidence)


def paired_difference(a: Arm, b: Arm, metric: str = "bleu", **options) -> Estimate:
    """A - B: ``a`` and ``b`` are runs (``read_predictions``) or lists of runs (seeds, subsets)."""
    return contrast([(1.0, a), (-1.0, b)], metric, **options)


def interval(run: Arm, metric: str = "bleu", **options) -> Estimate:
    """One run's (or arm's) metric with its bootstrap interval over the test inputs."""
    return contrast([(1.0, run)], metric, **options)


# ---- spread over seeds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """A metric over repeats (training seeds, data subsets); ``std`` with n - 1 (None for one run)."""

    n: int
    mean: float
    std: float | None
    min: float
    max: float


def seed_spread(values: Sequence[float]) -> Spread:
    values = [float(v) for v in values]
    if not values:
        raise SignificanceError("no values to take the spread of: no completed run")
    n, mean = len(values), sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Spread(n, mean, std, min(values), max(values))


def run_spread(runs: Sequence[Predictions], metric: str = "bleu") -> Spread:
    """The spread of the runs' own corpus metrics (each on its whole test set)."""
    return seed_spread([corpus_value(run, metric) for run in runs])
