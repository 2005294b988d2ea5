"""Summarization, generic generation, QA and classification metrics, from maintained packages:
rouge-score (ROUGE-1/2/L and the summary-level ROUGE-Lsum), sacrebleu (BLEU of ``task=local``),
scikit-learn (macro-F1), and the SQuAD v1.1 script's answer normalization."""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

_PUNCTUATION = set(string.punctuation)
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
# A sentence ends at . ! or ? followed by white space. nltk's punkt (what the Hugging Face summarization
# examples use) needs a data download that an offline machine does not have; this fixed rule splits
# news prose the same way except after abbreviations ("U.S. officials"), and is the same on every machine.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@lru_cache(maxsize=2)
def _rouge_scorer(keys: tuple[str, ...]):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(keys), use_stemmer=True)


def sentences_per_line(text: str) -> str:
    """The text with one sentence per line: rouge-score's ``rougeLsum`` takes the summary's sentences
    from its line breaks (the CNN/DailyMail highlights' own line breaks are kept)."""
    return "\n".join(s for line in text.splitlines() for s in _SENTENCE_END.split(line.strip()) if s)


def rouge(predictions: list[str], references: list[tuple[str, ...]], summary_level: bool = False) -> dict[str, float]:
    """ROUGE-1/2/L F1 x 100 (rouge-score, Porter stemming), averaged over examples; with several
    references, the best one counts (``score_multi``, as in the summarization literature).
    ``summary_level`` adds ``rougeLsum``: the union-LCS over sentences (``sentences_per_line``),
    the ROUGE-L variant most CNN/DailyMail and XSum papers report."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    keys = ROUGE_KEYS + (("rougeLsum",) if summary_level else ())
    if not predictions:
        return {key: 0.0 for key in keys}
    scorer = _rouge_scorer(keys)
    totals = {key: 0.0 for key in keys}
    for prediction, refs in zip(predictions, references):
        if summary_level:
            prediction, refs = sentences_per_line(prediction), tuple(sentences_per_line(r) for r in refs)
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
    """sacrebleu's corpus BLEU x 100 over all references of each example (13a tokenization,
    case-sensitive, "exp" smoothing: sacrebleu's defaults), the figure MT papers quote with a sacrebleu
    signature. ``task=local`` reports it; table-to-text tasks report the E2E script's BLEU instead
    (``mteval.bleu``: lowercased, mteval's smoothing)."""
    import sacrebleu

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    if not predictions:
        return 0.0
    if any(not refs for refs in references):
        raise ValueError("every example needs at least one reference for BLEU")
    return float(sacrebleu.corpus_bleu(predictions, _reference_streams(references)).score)


def generation_scores(predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
    """Task-agnostic text metrics (``task=local``): sacrebleu's BLEU, ROUGE-1/2/L and SQuAD exact match."""
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
