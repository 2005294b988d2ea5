"""Scorers with hand-checked values: corpus BLEU (multi-reference), NIST, SQuAD EM/F1, classification."""

import math

import pytest

from prefixlab.scoring import classification, corpus_bleu, corpus_nist, normalize_answer, squad, table_to_text, token_f1


def test_perfect_prediction_scores_100_bleu():
    assert corpus_bleu(["the cat sat on the mat"], [("the cat sat on the mat",)]) == pytest.approx(100.0)
    scores = table_to_text(["There is a pub.", "It is cheap."], [("There is a pub.",), ("It is cheap.", "Cheap.")])
    assert scores["bleu"] == pytest.approx(100.0) and scores["rougeL"] == pytest.approx(100.0)


def test_bleu_known_small_case():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (13a keeps these tokens as they are):
    # clipped n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty;
    # BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** 0.25 = 53.728...
    expected = 100 * (1 / 12) ** 0.25
    assert corpus_bleu(["the cat sat on the mat"], [("the cat sat on a mat",)]) == pytest.approx(expected, abs=1e-9)


def test_brevity_penalty_known_value():
    # hyp "the cat sat on" (4 tokens), ref of 6: all precisions 1, BP = exp(1 - 6/4)
    assert corpus_bleu(["the cat sat on"], [("the cat sat on a mat",)]) == pytest.approx(100 * math.exp(1 - 6 / 4))


def test_multi_reference_beats_single_reference():
    single = corpus_bleu(["the cat sat on the mat"], [("the cat sat on a mat",)])
    multi = corpus_bleu(["the cat sat on the mat"], [("the cat sat on a mat", "there the cat sat on the mat")])
    assert multi > single
    # corpus-level, with a different number of references per example (sacrebleu skips the padding)
    preds = ["the cat sat on the mat", "a dog barked loudly at night"]
    one = corpus_bleu(preds, [("the cat sat on a mat",), ("a dog barked at night",)])
    more = corpus_bleu(preds, [("the cat sat on a mat", "the cat sat on the mat"), ("a dog barked at night",)])
    assert more > one


def test_bleu_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        corpus_bleu(["a", "b"], [("a",)])


def test_nist_rewards_overlap_and_empty_is_zero():
    refs = [("the eagle is a cheap coffee shop near the river",)]
    good = corpus_nist(["the eagle is a cheap coffee shop near the river"], refs)
    worse = corpus_nist(["the eagle is a shop"], refs)
    assert good > worse > 0
    assert corpus_nist([""], refs) == 0.0


def test_squad_normalization_and_known_f1():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"
    # pred "new york city" vs ref "New York": overlap 2, precision 2/3, recall 1 -> F1 0.8
    assert token_f1("new york city", "New York") == pytest.approx(0.8)
    scores = squad(["Paris.", "new york city", "Berlin"], [("paris",), ("New York",), ("Bonn", "Berlin")])
    assert scores["exact_match"] == pytest.approx(100 * 2 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8 + 1) / 3)


def test_classification_accuracy_and_macro_f1():
    labels = ("sports", "tech", "business")
    preds = ["Sports", "tech.", "tech", "weather"]
    gold = [("sports",), ("tech",), ("business",), ("business",)]
    scores = classification(preds, gold, labels)
    assert scores["accuracy"] == pytest.approx(50.0)
    # sport F1 1; tech P 1/2 R 1 -> 2/3; business R 0 -> 0; macro = (1 + 2/3 + 0) / 3
    assert scores["macro_f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
