"""METEOR, ROUGE-L and CIDEr as the official E2E evaluation script computes them.

The E2E script (tuetschek/e2e-metrics) runs coco-caption: Stanford PTBTokenizer (lowercased,
punctuation tokens dropped) on outputs and references, then METEOR 1.5 (Java, ``-l en -norm``,
paraphrase table), ROUGE-L (LCS precision and recall, each the best over the references, combined
with beta = 1.2, averaged over outputs) and CIDEr-D. pycocoevalcap (PyPI) ships the same code with
both jars and the paraphrase data, so this runs offline wherever Java is installed; it is called
here, not copied.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path



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
    """One METEOR java process per Python process (starting one loads the paraphrase table, which takes seconds)."""
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
        predictions, references = coco_tokenized(predictions, references)
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
        predictions, references = coco_tokenized(predictions, references)
    if not any(r.split() for refs in references for r in refs):
        return 0.0  # no reference n-gram at all: nothing can match (pycocoevalcap would fail on max of nothing)
    score, _ = Cider().compute_score({i: list(refs) for i, refs in enumerate(references)},
                                     {i: [p] for i, p in enumerate(predictions)})
    return float(score)


def rouge_l(predictions: list[str], references: list[tuple[str, ...]], tokenized: bool = False) -> float:
    """coco-caption's ROUGE-L x 100 (the E2E script's ROUGE_L), not rouge-score's: on PTB tokens,
    F with beta 1.2 from the best precision and the best recall over the references."""
    from pycocoevalcap.rouge.rouge import Rouge

    _check_lengths(predictions, references)
    if not predictions:
        return 0.0
    if not tokenized:
        predictions, references = coco_tokenized(predictions, references)
    score, _ = Rouge().compute_score({i: list(refs) for i, refs in enumerate(references)},
                                     {i: [p] for i, p in enumerate(predictions)})
    return 100.0 * float(score)


def _check_lengths(predictions: list[str], references: list[tuple[str, ...]]) -> None:
    """One reference set per prediction, or ValueError."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")


def coco_tokenized(predictions: list[str], references: list[tuple[str, ...]]):
    """Predictions and references through one tokenizer call (one JVM start)."""
    flat = coco_tokenize(list(predictions) + [r for refs in references for r in refs])
    preds, rest = flat[: len(predictions)], iter(flat[len(predictions):])
    return preds, [tuple(next(rest) for _ in refs) for refs in references]


