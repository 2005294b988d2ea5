"""Metrics over generated text, from maintained packages rather than hand-written scorers."""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

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
    return float(nltk_nist(refs, hypotheses, n=n))


def table_to_text(predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
    """The E2E / DART figures: multi-reference corpus BLEU and NIST, and ROUGE-L (best reference)."""
    scores = rouge(predictions, references)
    return {
        "bleu": corpus_bleu(predictions, references),
        "nist": corpus_nist(predictions, references) if predictions else 0.0,
        "rougeL": scores["rougeL"],
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
