"""BLEU and NIST exactly as the official E2E NLG Challenge script computes them.

The E2E script (tuetschek/e2e-metrics, ``measure_scores.py``) writes the outputs and references to
SGML files and runs NIST's ``mteval-v13a-sig.pl`` (Perl) without ``-c``. What is reproduced here,
with the Perl subroutine each part follows:

* **Text on its way in.** Each line is ``str.strip()``-ed by the script's reader; Perl then collapses
  every run of (Perl Unicode) whitespace to one space when it reads the SGML documents.
* **Tokenization** (``tokenization``): ``<skipped>`` removed; ``&quot; &amp; &lt; &gt;`` decoded;
  **ASCII-only** lowercasing (``tr/[A-Z]/[a-z]/``: ``É`` stays ``É``); punctuation and symbols split off
  (the apostrophe and the hyphen are not); ``.`` and ``,`` split off unless between digits; a hyphen
  after a digit split off.
* **References.** An output with fewer references than the most any output has is padded with
  empty references (``create_mteval_file``), which the ``-sig`` script skips: they never set the
  BLEU reference length, and NIST's reference length is the total reference words divided by the
  *mean* number of references per output. (Dividing by the padded maximum, as a plain reading of
  ``nist_score`` suggests, gives 8.6700 instead of the official 3.9397 on the ``loo_trunc`` case of
  ``official_scores.py``; the mean reproduces all four official NIST figures.)
* **BLEU** (``bleu_score``, the smoothed default): corpus n-gram counts up to 4, clipped by each
  n-gram's largest count in any one reference; the brevity penalty uses, per output, the closest
  reference length (ties: the shorter); an order with no match counts ``1 / (2^k * total)`` (k-th such
  order), an order with no n-gram in the outputs counts 1.
* **NIST** (``compute_ngram_info``, ``score_segment``, ``nist_score``): information weights from all
  references' n-gram counts, ``-log2(count(w1..wn) / count(w1..wn-1))`` (unigrams: over the total
  reference words; Perl also takes that branch when the (n-1)-gram is the single token ``0``, which
  is false in Perl), summed over the clipped matches up to 5-grams, each order divided by the
  outputs' n-gram count, times the length penalty ``exp(-beta * log(ratio)^2)`` with
  ``beta = -log(0.5) / log(1.5)^2`` for an output/reference length ratio below 1.

``tests/tasks/scoring/test_score_cli.py`` reproduces the official figures of
``../shared/data/e2e/official_scores.py`` to 4 decimals.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

# Perl's \s on a character string (5.18+): what ``$span =~ s/[\s\n\r]+/ /g`` and ``split /\s+/`` see.
# Python's \s would also take \x1c-\x1f; Perl does not.
_PERL_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PERL_SPACES = re.compile(f"[{_PERL_SPACE}]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# mteval-v13a's four substitutions, in its order (sacrebleu's Tokenizer13a uses the same patterns)
_PUNCTUATION = re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])")
_PERIOD_COMMA_AFTER = re.compile(r"([^0-9])([\.,])")
_PERIOD_COMMA_BEFORE = re.compile(r"([\.,])([^0-9])")
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")

BLEU_ORDER = 4
NIST_ORDER = 5


def mteval_tokens(text: str) -> list[str]:
    """The tokens mteval-v13a scores for one output or reference line, as the E2E script feeds it."""
    text = _PERL_SPACES.sub(" ", text.strip())  # the script's line.strip(), then Perl joining the SGML records
    text = text.replace("<skipped>", "").replace("&quot;", '"').replace("&amp;", "&")
    text = text.replace("&lt;", "<").replace("&gt;", ">")
    text = f" {text} ".translate(_ASCII_LOWER)
    text = _PUNCTUATION.sub(r" \1 ", text)
    text = _PERIOD_COMMA_AFTER.sub(r"\1 \2 ", text)
    text = _PERIOD_COMMA_BEFORE.sub(r" \1 \2", text)
    text = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", text)
    return [token for token in _PERL_SPACES.split(text) if token]


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def _closest_reference_length(output_length: int, reference_lengths: list[int]) -> int:
    """``brevity_penalty_closest`` of the -sig script: the first reference's length, then each later
    non-empty reference replaces it if closer to the output (ties: the shorter)."""
    chosen = reference_lengths[0]
    for length in reference_lengths[1:]:
        if not length:
            continue
        if abs(output_length - length) < abs(output_length - chosen) or (
                abs(output_length - length) == abs(output_length - chosen) and length < chosen):
            chosen = length
    return chosen


@dataclass
class MtevalStatistics:
    """Corpus sums of mteval's per-output statistics (index n-1 holds order n)."""
    reference_length: int = 0  # the BLEU reference length (closest per output)
    matches: list[int] = field(default_factory=lambda: [0] * NIST_ORDER)
    output_ngrams: list[int] = field(default_factory=lambda: [0] * NIST_ORDER)
    reference_words: int = 0  # all references' words (NIST's reference length, with the next)
    information: list[float] = field(default_factory=lambda: [0.0] * NIST_ORDER)
    references_per_output: float = 1.0  # the mean number of references per output


def mteval_statistics(outputs: list[str], references: list[tuple[str, ...]]) -> MtevalStatistics:
    """Tokenize and count once; ``bleu`` and ``nist`` read the sums."""
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs but {len(references)} reference sets")
    if any(not refs for refs in references):
        raise ValueError("every output needs at least one reference")
    output_tokens = [mteval_tokens(o) for o in outputs]
    reference_tokens = [[mteval_tokens(r) for r in refs] for refs in references]
    all_reference_words = sum(len(t) for refs in reference_tokens for t in refs)
    if not all_reference_words:
        raise ValueError("the references hold no word at all")

    # information weights from every reference n-gram (compute_ngram_info counts up to 9-grams; the
    # weights of orders 1-5 are the ones NIST uses)
    counts: Counter = Counter()
    for refs in reference_tokens:
        for tokens in refs:
            counts.update(_ngrams(tokens, NIST_ORDER))

    def information(ngram: tuple[str, ...]) -> float:
        history = ngram[:-1]
        perl_false = not history or history == ("0",)  # `$mgram ? ... : ...` with "" or "0"
        return -math.log(counts[ngram] / (all_reference_words if perl_false else counts[history])) / math.log(2)

    stats = MtevalStatistics(reference_words=all_reference_words,
                             references_per_output=sum(map(len, references)) / len(references))
    for tokens, refs in zip(output_tokens, reference_tokens):
        most: Counter = Counter()
        for ref in refs:
            for ngram, count in _ngrams(ref, NIST_ORDER).items():
                most[ngram] = max(most[ngram], count)
        stats.reference_length += _closest_reference_length(len(tokens), [len(r) for r in refs])
        for n in range(1, NIST_ORDER + 1):
            stats.output_ngrams[n - 1] += max(len(tokens) - n + 1, 0)
        for ngram, count in _ngrams(tokens, NIST_ORDER).items():
            if ngram in most:
                clipped = min(count, most[ngram])
                stats.matches[len(ngram) - 1] += clipped
                stats.information[len(ngram) - 1] += information(ngram) * clipped
    return stats


def bleu_counts(outputs: list[str], references: list[tuple[str, ...]]) -> list[tuple[int, ...]]:
    """Per output: (reference length, matches of orders 1-4, n-grams of orders 1-4). BLEU's corpus
    statistics are their sums (``bleu_of_counts``), so a bootstrap resamples these rows instead of
    tokenizing again."""
    rows = []
    for output, refs in zip(outputs, references, strict=True):
        stats = mteval_statistics([output], [refs])
        rows.append((stats.reference_length, *stats.matches[:BLEU_ORDER], *stats.output_ngrams[:BLEU_ORDER]))
    return rows


def bleu_of_counts(rows: list[tuple[int, ...]]) -> float:
    """The corpus BLEU of ``bleu_counts`` rows (any subset or resample of them)."""
    sums = [sum(column) for column in zip(*rows)] if rows else [0] * (1 + 2 * BLEU_ORDER)
    return _bleu(sums[0], sums[1:1 + BLEU_ORDER], sums[1 + BLEU_ORDER:])


def bleu(stats: MtevalStatistics) -> float:
    """mteval's smoothed corpus BLEU (a fraction, as the E2E script prints it)."""
    return _bleu(stats.reference_length, stats.matches, stats.output_ngrams)


def _bleu(reference_length: int, matches: list[int], output_ngrams: list[int]) -> float:
    output_words = output_ngrams[0]
    penalty = math.exp(min(0.0, 1 - reference_length / output_words)) if output_words > 0 else 0.0
    log_sum, smooth = 0.0, 1
    for n in range(BLEU_ORDER):
        total, matched = output_ngrams[n], matches[n]
        if total == 0:
            continue  # log(1): an order the outputs do not have does not count against them
        if matched == 0:
            smooth *= 2
            log_sum += math.log(1 / (smooth * total))
        else:
            log_sum += math.log(matched / total)
    return math.exp(log_sum / BLEU_ORDER) * penalty


_NIST_BETA = -math.log(0.5) / math.log(1.5) / math.log(1.5)


def nist(stats: MtevalStatistics) -> float:
    """mteval's corpus NIST at order 5."""
    score = sum(info / max(total, 1) for info, total in zip(stats.information, stats.output_ngrams))
    ratio = stats.output_ngrams[0] / (stats.reference_words / stats.references_per_output)
    if ratio >= 1:
        return score
    if ratio <= 0:
        return 0.0
    return score * math.exp(-_NIST_BETA * math.log(ratio) ** 2)
