"""Metrics over generated text, from maintained packages rather than hand-written scorers."""

from __future__ import annotations

import os
import re
import shutil
import string
import subprocess
import tempfile
from collections import Counter
from functools import lru_cache
from pathlib import Path

_PUNCTUATION = set(string.punctuation)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
    """ROUGE-1/2/L F1 x 100, averaged over examples; with several references, the best one counts
    (rouge-score's ``score_multi``, as in the summarization literature)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    if not predictions:
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    scorer = _rouge_scorer()
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, refs in zip(predictions, references):
        scores = scorer.score_multi(list(refs), prediction)
        for key in totals:
            totals[key] += scores[key].fmeasure
    return {key: 100.0 * value / len(predictions) for key, value in totals.items()}


def _reference_streams(references: list[tuple[str, ...]]) -> list[list[str | None]]:
    """sacrebleu wants one stream per reference position; examples with fewer references
    are padded with None, which sacrebleu skips (a variable number of references)."""
    width = max(len(refs) for refs in references)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]


def corpus_bleu(predictions: list[str], references: list[tuple[str, ...]]) -> float:
    """Corpus BLEU x 100 over all references of each example (sacrebleu, 13a tokenization,
    case-sensitive, "exp" smoothing: sacrebleu's defaults; smoothing only matters when an n-gram
    order has no match, rare at corpus level). Fewer than 4 tokens in all predictions gives 0."""
    import sacrebleu

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    if not predictions:
        return 0.0
    if any(not refs for refs in references):
        raise ValueError("every example needs at least one reference for BLEU")
    return float(sacrebleu.corpus_bleu(predictions, _reference_streams(references)).score)


def corpus_nist(predictions: list[str], references: list[tuple[str, ...]], n: int = 5) -> float:
    """Corpus NIST (n=5, as in the E2E challenge) from nltk, on sacrebleu's 13a tokens."""
    from nltk.translate.nist_score import corpus_nist as nltk_nist
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenize = Tokenizer13a()
    hypotheses = [tokenize(p).split() for p in predictions]
    if not any(hypotheses):
        return 0.0  # nltk divides by the hypothesis length
    refs = [[tokenize(r).split() for r in group] for group in references]
    # nltk divides by the number of hypothesis n-grams of each order: when every prediction is shorter
    # than n tokens that is 0 (ZeroDivisionError); such an order contributes nothing, as in mteval.
    return float(nltk_nist(refs, hypotheses, n=min(n, max(len(h) for h in hypotheses))))


# ---- METEOR and CIDEr as the official E2E evaluation script computes them ----------------------
# The E2E script (tuetschek/e2e-metrics) runs coco-caption: Stanford PTBTokenizer (lowercased,
# punctuation tokens dropped) on predictions and references, then METEOR 1.5 (Java, `-l en -norm`,
# paraphrase table) and CIDEr-D. pycocoevalcap (PyPI) ships the same code with both jars and the
# paraphrase data, so this runs offline wherever Java is installed.


class MetricUnavailableError(RuntimeError):
    """A metric's dependency (Java, pycocoevalcap) is missing or its process failed."""


def _pycocoevalcap_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pycocoevalcap")  # a namespace package: no __init__.py, so no origin
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailableError("METEOR and CIDEr need the PyPI package 'pycocoevalcap': pip install pycocoevalcap")
    return Path(next(iter(spec.submodule_search_locations)))


def check_coco_metrics() -> None:
    """Raise MetricUnavailableError (one line, with the fix) unless METEOR can run: Java on PATH and
    pycocoevalcap with its METEOR jar, paraphrase table and PTB tokenizer jar."""
    root = _pycocoevalcap_dir()
    for part in ("meteor/meteor-1.5.jar", "meteor/data/paraphrase-en.gz", "tokenizer/stanford-corenlp-3.4.1.jar"):
        if not (root / part).is_file():
            raise MetricUnavailableError(f"pycocoevalcap is missing {root / part}: reinstall it (pip install --force-reinstall pycocoevalcap)")
    if shutil.which("java") is None:
        raise MetricUnavailableError(
            "METEOR 1.5 (the E2E script's, via pycocoevalcap) runs on Java, and `java` is not on PATH: "
            "install a Java runtime (e.g. apt-get install default-jre-headless)"
        )


def coco_tokenize(texts: list[str]) -> list[str]:
    """coco-caption's PTB tokenization: Stanford PTBTokenizer ``-preserveLines -lowerCase``, then the
    punctuation tokens dropped. The same command as pycocoevalcap's PTBTokenizer, but its temporary
    file goes to the system temp folder (pycocoevalcap writes into its own package folder)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import (
        PUNCTUATIONS,
        STANFORD_CORENLP_3_4_1_JAR,
    )

    check_coco_metrics()
    jar = _pycocoevalcap_dir() / "tokenizer" / STANFORD_CORENLP_3_4_1_JAR
    # one text per line: every line break the tokenizer might honour becomes a space
    lines = [" ".join(text.splitlines()) for text in texts]
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    try:
        done = subprocess.run(["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                               "-lowerCase", handle.name], capture_output=True, check=False)
    finally:
        os.unlink(handle.name)
    out = done.stdout.decode("utf-8", errors="replace").split("\n")
    if done.returncode != 0 or len(out) < len(lines):
        raise MetricUnavailableError(f"the PTB tokenizer (java) failed: {done.stderr.decode(errors='replace').strip()[:300]}")
    return [" ".join(w for w in line.rstrip().split(" ") if w and w not in PUNCTUATIONS) for line in out[: len(lines)]]


_meteor_process = None


def _meteor():
    """One METEOR java process per Python process (starting one loads the paraphrase table: ~10 s)."""
    global _meteor_process
    if _meteor_process is None or _meteor_process.meteor_p.poll() is not None:
        check_coco_metrics()
        from pycocoevalcap.meteor.meteor import Meteor

        _meteor_process = Meteor()
    return _meteor_process


def meteor(predictions: list[str], references: list[tuple[str, ...]], tokenized: bool = False) -> float:
    """Corpus METEOR 1.5 x 100 as in the E2E script: coco-caption tokenization, ``-l en -norm``, all
    references of each example; the corpus score comes from METEOR's pooled statistics (not the mean of
    sentence scores). Raises MetricUnavailableError without Java, never returns a silent 0."""
    _check_lengths(predictions, references)
    if not predictions:
        return 0.0
    if not tokenized:
        predictions, references = _coco_tokenized(predictions, references)
    # METEOR's stdio protocol separates fields with |||
    res = {i: [p.replace("|||", " ")] for i, p in enumerate(predictions)}
    gts = {i: [r.replace("|||", " ") for r in refs] for i, refs in enumerate(references)}
    scorer = _meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    except (ValueError, OSError) as error:  # the java process died or answered nonsense
        global _meteor_process
        _meteor_process = None
        raise MetricUnavailableError(f"METEOR 1.5 (java) failed: {error}") from error
    return 100.0 * float(score)


def cider(predictions: list[str], references: list[tuple[str, ...]], tokenized: bool = False) -> float:
    """CIDEr-D as in the E2E script (coco-caption's Cider: n = 1..4, Gaussian length penalty sigma 6,
    clipped counts, x10, averaged over references). The idf comes from the references of the examples
    scored, so the figure depends on that set: compare only over the same examples; one example gives 0."""
    from pycocoevalcap.cider.cider import Cider

    _check_lengths(predictions, references)
    if not predictions:
        return 0.0
    if not tokenized:
        predictions, references = _coco_tokenized(predictions, references)
    if not any(r.split() for refs in references for r in refs):
        return 0.0  # no reference n-gram at all: nothing can match (pycocoevalcap would fail on max of nothing)
    score, _ = Cider().compute_score({i: list(refs) for i, refs in enumerate(references)},
                                     {i: [p] for i, p in enumerate(predictions)})
    return float(score)


def _check_lengths(predictions: list[str], references: list[tuple[str, ...]]) -> None:
    """One reference set per prediction, or ValueError."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")


def _coco_tokenized(predictions: list[str], references: list[tuple[str, ...]]):
    """Predictions and references through one tokenizer call (one JVM start)."""
    flat = coco_tokenize(list(predictions) + [r for refs in references for r in refs])
    preds, rest = flat[: len(predictions)], iter(flat[len(predictions):])
    return preds, [tuple(next(rest) for _ in refs) for refs in references]


def table_to_text(predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
    """The E2E / WebNLG / DART figures: multi-reference corpus BLEU and NIST, METEOR and CIDEr
    (the E2E script's definitions, above), and ROUGE-L (rouge-score, best reference)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    scores = rouge(predictions, references)
    coco_preds, coco_refs = _coco_tokenized(predictions, references) if predictions else ([], [])
    return {
        "bleu": corpus_bleu(predictions, references),
        "nist": corpus_nist(predictions, references) if predictions else 0.0,
        "meteor": meteor(coco_preds, coco_refs, tokenized=True),
        "rougeL": scores["rougeL"],
        "cider": cider(coco_preds, coco_refs, tokenized=True),
    }


def generation_scores(predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
    """Task-agnostic text metrics (local files): BLEU, ROUGE-1/2/L and SQuAD exact match."""
    return {
        "bleu": corpus_bleu(predictions, references) if predictions else 0.0,
        **rouge(predictions, references),
        "exact_match": squad(predictions, references)["exact_match"],
    }


# ---- SQuAD-style answer scoring (the official v1.1 evaluation script's normalization) -----------
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
    """Exact match and token F1 x 100, each the best over the references, averaged over examples."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for prediction, refs in zip(predictions, references):
        em += max(float(normalize_answer(prediction) == normalize_answer(r)) for r in refs)
        f1 += max(token_f1(prediction, r) for r in refs)
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * f1 / len(predictions)}


def classification(predictions: list[str], references: list[tuple[str, ...]], labels: tuple[str, ...]) -> dict[str, float]:
    """Accuracy and macro-F1 x 100 over ``labels``, after SQuAD normalization of both sides.
    A prediction outside the label set is simply wrong (it counts for no class)."""
    from sklearn.metrics import f1_score

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    if not predictions:
        return {"accuracy": 0.0, "macro_f1": 0.0}
    gold = [normalize_answer(refs[0]) for refs in references]
    guess = [normalize_answer(p) for p in predictions]
    names = [normalize_answer(label) for label in labels]
    accuracy = sum(g == p for g, p in zip(gold, guess)) / len(gold)
    macro = f1_score(gold, guess, labels=names, average="macro", zero_division=0)
    return {"accuracy": 100.0 * accuracy, "macro_f1": 100.0 * float(macro)}
