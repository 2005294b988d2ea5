"""The E2E script's BLEU and NIST (mteval-v13a as its measure_scores.py runs it), with hand-checked values.

Reference: mteval-v13a-sig.pl (tokenization, score_segment, bleu_score, nist_score) as the E2E
NLG Challenge's e2e-metrics runs it; the official figures themselves are checked in
test_score_cli.py."""

import math

import pytest

from prefixlab.tasks.scoring import corpus_nist, e2e_script, rouge, sentences_per_line, table_to_text
from prefixlab.tasks.scoring.mteval import _closest_reference_length, bleu, mteval_statistics, mteval_tokens, nist

NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2


# ---- tokenization: mteval-v13a's `tokenization` -------------------------------------------------

def test_lowercasing_is_ascii_only_like_perl_tr():
    # tr/[A-Z]/[a-z]/ leaves non-ASCII capitals alone: "CAFÉ" -> "cafÉ", which no longer matches "café"
    assert mteval_tokens("The Eagle is a CAFÉ.") == ["the", "eagle", "is", "a", "cafÉ", "."]
    assert mteval_tokens("Café") == ["café"]


def test_punctuation_symbols_and_what_stays_attached():
    # the apostrophe and the hyphen are not split off; a non-ASCII symbol (£) stays on its word;
    # a hyphen after a digit is split; brackets and ! are split
    assert mteval_tokens("It's £20-25, near (the) river!") == [
        "it's", "£20", "-", "25", ",", "near", "(", "the", ")", "river", "!"]
    assert mteval_tokens("family-friendly 5-star") == ["family-friendly", "5", "-", "star"]
    assert mteval_tokens("Don't stop.End") == ["don't", "stop", ".", "end"]


def test_numbers_keep_their_period_and_comma_only_between_digits():
    assert mteval_tokens("3.5 stars, 1,000 people, 2.. x") == [
        "3.5", "stars", ",", "1,000", "people", ",", "2", ".", ".", "x"]
    assert mteval_tokens("x.5 .5") == ["x", ".", "5", ".", "5"]


def test_sgml_entities_are_decoded_as_mteval_does():
    assert mteval_tokens("fish &amp; chips &quot;ok&quot;") == ["fish", "&", "chips", '"', "ok", '"']


def test_empty_outputs_and_perl_whitespace():
    assert mteval_tokens("") == [] and mteval_tokens("  \t ") == []
    assert mteval_tokens("a\u00a0b\u2028c") == ["a", "b", "c"]  # Perl's \s on characters includes these
    assert mteval_tokens("a\x1cb") == ["a\x1cb"]  # Python's \s would split here; Perl's does not


def test_tokenization_equals_sacrebleus_13a_on_lowercase_ascii():
    # sacrebleu's Tokenizer13a reimplements the same four substitutions; on lowercase ASCII the two agree
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    lines = ["the eagle, a 5-star coffee shop (near burger king), costs 20-25 pounds.",
             "it's family-friendly; rated 3.5/5 & located at 1,000 river st.", "a <b> c {d} e~f|g^h_i`j"]
    for line in lines:
        assert " ".join(mteval_tokens(line)) == Tokenizer13a()(line)


# ---- BLEU: bleu_score (smoothed), brevity penalty from the closest reference ---------------------

def test_bleu_known_values():
    stats = mteval_statistics(["the cat sat on the mat"], [("the cat sat on a mat",)])
    assert bleu(stats) == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-12)
    assert bleu(mteval_statistics(["The Cat."], [("the cat .",)])) == pytest.approx(1.0)  # case-insensitive


def test_bleu_smoothing_and_missing_orders_as_mteval():
    # hyp "a b c" vs ref "a b d e": 1-grams 2/3, 2-grams 1/2, 3-grams 0 of 1 -> 1/(2*1) (first
    # smoothed order), 4-grams: the hypothesis has none -> counts as 1; BP exp(1 - 4/3)
    expected = math.exp((math.log(2 / 3) + math.log(1 / 2) + math.log(1 / 2) + 0) / 4) * math.exp(1 - 4 / 3)
    assert bleu(mteval_statistics(["a b c"], [("a b d e",)])) == pytest.approx(expected, abs=1e-12)
    assert bleu(mteval_statistics([""], [("a b",)])) == 0.0  # an empty output: BP 0


def test_closest_reference_length_prefers_the_shorter_on_ties_and_skips_empty_padding():
    assert _closest_reference_length(5, [7, 4, 6]) == 4  # 4 and 6 are both 1 away: the shorter
    assert _closest_reference_length(3, [7, 0]) == 7  # an empty (padding) reference never wins
    assert mteval_statistics(["a b c d e"], [("a b c d", "a b c d e f")]).reference_length == 4


# ---- NIST: compute_ngram_info, score_segment, nist_score -----------------------------------------

def test_nist_hand_computed():
    # ref "a b a c": info(a) = -log2(2/4) = 1, info(b) = -log2(1/4) = 2, info(a b) = -log2(1/2) = 1.
    # hyp "a b": (1 + 2) / 2 unigrams + 1 / 1 bigram = 2.5; length ratio 2 / 4 -> penalty
    penalty = math.exp(-NIST_BETA * math.log(0.5) ** 2)
    assert corpus_nist(["a b"], [("a b a c",)]) == pytest.approx(2.5 * penalty, abs=1e-12)
    assert corpus_nist([""], [("a b",)]) == 0.0


def test_nist_information_of_an_ngram_after_the_token_0_uses_the_unigram_branch_as_perl_does():
    # `$mgram ? ... : ...` is false for the string "0": info("0 x") = -log2(1/4) = 2, not -log2(1/2) = 1
    penalty = math.exp(-NIST_BETA * math.log(0.5) ** 2)
    assert corpus_nist(["0 x"], [("0 x 0 y",)]) == pytest.approx(((1 + 2) / 2 + 2) * penalty, abs=1e-12)


def test_nist_reference_length_uses_the_mean_number_of_references():
    # 2 outputs with 1 and 2 references: 10 reference words / 1.5 references per output = 6.67 > 6
    # output words, so a length penalty applies (with the padded maximum, 10 / 2 = 5, it would not)
    stats = mteval_statistics(["a b c d", "e f"], [("a b c d",), ("e f", "e f g h")])
    assert stats.references_per_output == 1.5 and stats.reference_words == 10
    raw = sum(i / max(t, 1) for i, t in zip(stats.information, stats.output_ngrams))
    assert nist(stats) == pytest.approx(raw * math.exp(-NIST_BETA * math.log(6 / (10 / 1.5)) ** 2), abs=1e-12)
    assert nist(stats) < raw


def test_bad_reference_sets_are_refused():
    with pytest.raises(ValueError, match="2 outputs but 1"):
        mteval_statistics(["a", "b"], [("a",)])
    with pytest.raises(ValueError, match="at least one reference"):
        mteval_statistics(["a"], [()])


# ---- the five together, in both scales ------------------------------------------------------------

@pytest.mark.cli  # the E2E script's METEOR / ROUGE-L / CIDEr run Java (the PTB tokenizer, METEOR) in subprocesses
def test_table_to_text_is_the_e2e_script_in_points():
    preds = ["The Eagle is a cheap coffee shop.", "Blue Spice serves French food near the river."]
    refs = [("The Eagle is a cheap coffee shop near the river.", "A cheap coffee shop: The Eagle."),
            ("Blue Spice is a French place by the river.",)]
    official, points = e2e_script(preds, refs), table_to_text(preds, refs)
    assert points == pytest.approx({"bleu": 100 * official["BLEU"], "nist": official["NIST"],
                                    "meteor": 100 * official["METEOR"], "rougeL": 100 * official["ROUGE_L"],
                                    "cider": official["CIDEr"]})
    # coco-caption's ROUGE-L (beta 1.2, best precision and best recall) on the PTB tokens, by hand for
    # one output: hyp "the eagle is a cheap coffee shop" (7) vs ref 1 (10 tokens, LCS 7): P = 1, R = 0.7
    one = e2e_script(preds[:1], refs[:1])
    assert one["ROUGE_L"] == pytest.approx((1 + 1.44) * 1.0 * 0.7 / (0.7 + 1.44 * 1.0), abs=1e-12)


# ---- ROUGE-Lsum (summarization) -------------------------------------------------------------------

def test_rouge_lsum_is_summary_level():
    assert sentences_per_line("The cat sat. The dog ran!  Why?") == "The cat sat.\nThe dog ran!\nWhy?"
    swapped = rouge(["The dog ran. The cat sat."], [("The cat sat. The dog ran.",)], summary_level=True)
    # one LCS over the whole text finds only "the cat sat" (3 of 6 tokens); per sentence, every token matches
    assert swapped["rougeL"] == pytest.approx(50.0) and swapped["rougeLsum"] == pytest.approx(100.0)
    assert "rougeLsum" not in rouge(["a"], [("a",)])


def test_bleu_from_per_output_counts_equals_the_corpus_bleu():
    # what a bootstrap resamples: the sums of per-output counts are the corpus statistics
    from prefixlab.tasks.scoring.mteval import bleu_counts, bleu_of_counts

    outputs = ["the cat sat on the mat", "a b c", "The Eagle is a CAFÉ.", ""]
    refs = [("the cat sat on a mat", "there is a cat"), ("a b d e",), ("The Eagle is a café.",), ("x y",)]
    rows = bleu_counts(outputs, refs)
    assert bleu_of_counts(rows) == pytest.approx(bleu(mteval_statistics(outputs, refs)), abs=1e-15)
    assert bleu_of_counts([rows[0], rows[0], rows[2]]) == pytest.approx(
        bleu(mteval_statistics([outputs[0], outputs[0], outputs[2]], [refs[0], refs[0], refs[2]])), abs=1e-15)
