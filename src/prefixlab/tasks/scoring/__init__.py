"""Metrics over generated text.

* ``e2e_script`` / ``table_to_text``: the five figures of the official E2E NLG Challenge script
  (``measure_scores.py`` of tuetschek/e2e-metrics) for e2e, webnlg and dart: BLEU and NIST as its
  mteval-v13a run computes them (``mteval``), METEOR, ROUGE-L and CIDEr as its coco-caption run
  does (``coco``). ``prefixlab-score`` prints them for any system's output files.
* ``text``: rouge-score ROUGE (and ROUGE-Lsum) for summarization and headlines, sacrebleu BLEU for
  ``task=local``, SQuAD exact match / F1, accuracy and macro-F1.
"""

from __future__ import annotations

from prefixlab.tasks.scoring.coco import (MetricUnavailableError, check_coco_metrics, cider, coco_tokenize, coco_tokenized, meteor,
                   rouge_l)
from prefixlab.tasks.scoring.mteval import bleu as _mteval_bleu
from prefixlab.tasks.scoring.mteval import mteval_statistics
from prefixlab.tasks.scoring.mteval import nist as _mteval_nist
from prefixlab.tasks.scoring.text import (classification, corpus_bleu, generation_scores, normalize_answer, rouge, sentences_per_line,
                   squad, token_f1)

# The official script's names and scales: BLEU, METEOR and ROUGE_L as fractions, NIST and CIDEr as they are.
E2E_SCRIPT_METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")


def corpus_nist(predictions: list[str], references: list[tuple[str, ...]]) -> float:
    """The E2E script's corpus NIST (mteval-v13a, 5-grams)."""
    if not predictions:
        return 0.0
    return _mteval_nist(mteval_statistics(predictions, references))


def e2e_script(predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
    """What ``measure_scores.py`` prints for these outputs, each with its references (one tuple per
    output, any number), in its scales. METEOR needs Java (``MetricUnavailableError`` without it)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    if not predictions:
        return {name: 0.0 for name in E2E_SCRIPT_METRICS}
    stats = mteval_statistics(predictions, references)
    coco_preds, coco_refs = coco_tokenized(predictions, references)  # one JVM start for all three
    return {
        "BLEU": _mteval_bleu(stats),
        "NIST": _mteval_nist(stats),
        "METEOR": meteor(coco_preds, coco_refs, tokenized=True) / 100.0,
        "ROUGE_L": rouge_l(coco_preds, coco_refs, tokenized=True) / 100.0,
        "CIDEr": cider(coco_preds, coco_refs, tokenized=True),
    }


def table_to_text(predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
    """The e2e / webnlg / dart figures of ``metrics.json``: the E2E script's five metrics, with BLEU,
    METEOR and ROUGE-L in points (x 100, as papers print them)."""
    scores = e2e_script(predictions, references)
    return {"bleu": 100.0 * scores["BLEU"], "nist": scores["NIST"], "meteor": 100.0 * scores["METEOR"],
            "rougeL": 100.0 * scores["ROUGE_L"], "cider": scores["CIDEr"]}


__all__ = [
    "E2E_SCRIPT_METRICS", "MetricUnavailableError", "check_coco_metrics", "cider", "classification", "coco_tokenize",
    "coco_tokenized", "corpus_bleu", "corpus_nist", "e2e_script", "generation_scores", "meteor", "mteval_statistics",
    "normalize_answer", "rouge", "rouge_l", "sentences_per_line", "squad", "table_to_text", "token_f1",
]
