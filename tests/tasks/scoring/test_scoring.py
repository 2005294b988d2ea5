"""Scorers with hand-checked values: corpus BLEU (multi-reference), NIST, METEOR, CIDEr, SQuAD EM/F1, classification."""

import math

import pytest

from prefixlab.tasks.scoring import (
    cider,
    classification,
    corpus_bleu,
    corpus_nist,
    meteor,
    normalize_answer,
    squad,
    table_to_text,
    token_f1,
)


def test_perfect_prediction_scores_100_bleu():
    assert corpus_bleu(["the cat sat on the mat"], [("the cat sat on the mat",)]) == pytest.approx(100.0)


@pytest.mark.cli  # table_to_text runs Java (the PTB tokenizer, METEOR) in subprocesses
def test_perfect_table_to_text_prediction_scores_100_bleu_and_rouge_l():
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


def test_nist_when_every_prediction_is_shorter_than_five_tokens():
    # regression: nltk divided by the number of 3/4/5-grams of the predictions (0 here) and crashed the evaluation
    assert corpus_nist(["xx yy", "zz"], [("the cat sat on the mat",), ("a dog barked",)]) == 0.0
    assert corpus_nist(["the cat"], [("the cat sat on the mat",)]) > 0.0


# ---- METEOR and CIDEr (pycocoevalcap, the E2E script's definitions; METEOR starts a JVM once: ~10 s) ----

@pytest.mark.cli  # Java (the PTB tokenizer, METEOR) in subprocesses
def test_table_to_text_reports_meteor_and_cider_at_their_maximum_for_perfect_predictions():
    preds = ["The Eagle is a cheap coffee shop.", "Blue Spice serves French food near the river."]
    scores = table_to_text(preds, [(p,) for p in preds])
    assert set(scores) == {"bleu", "nist", "meteor", "rougeL", "cider"}
    assert scores["meteor"] == pytest.approx(100.0) and scores["cider"] == pytest.approx(10.0)  # CIDEr-D's max is 10
    # coco tokenization lowercases and drops punctuation; the best of several references counts for METEOR
    assert meteor(["there is a PUB , by the river"], [("No.", "There is a pub by the river.")]) == pytest.approx(100.0)
    assert meteor(["zebra quantum"], [("the cat sat on the mat",)]) == 0.0
    partial = meteor(["the cat sat"], [("the cat sat on the mat",)])
    assert 0.0 < partial < 100.0


def test_cider_hand_computed_two_example_corpus_on_tokens():
    # The CIDEr-D arithmetic alone, on already tokenized text (no Java: stays in `make test-fast`);
    # the case and its hand computation are those of the test below.
    a = 10 * (1 / math.sqrt(2) + 1 / math.sqrt(3)) / 4 * math.exp(-4 / 72)
    assert cider(["a b", "e f g h"], [("a b c d",), ("e f g h",)], tokenized=True) == pytest.approx((a + 10) / 2, abs=1e-9)
    assert cider(["e f g h"], [("e f g h",)], tokenized=True) == 0.0


@pytest.mark.cli  # the PTB tokenizer runs on Java in a subprocess
def test_cider_hand_computed_two_example_corpus():
    # Two examples, one reference each. idf = log(2) - log(df): every n-gram here occurs in one
    # reference set only, so every weight is log 2 and cancels in the cosines.
    # Example A: hyp "a b" vs ref "a b c d". n=1: cos = (2 l^2) / (sqrt(2) l * 2 l) = 1/sqrt(2);
    # n=2: hyp {ab}, ref {ab, bc, cd}: cos = 1/sqrt(3); n=3,4: hyp has none -> 0. coco-caption's length
    # penalty counts BIGRAMS (its `n == 1` is the index of 2-grams): 1 vs 3 -> exp(-(2^2) / (2 * 6^2)).
    # Example B: perfect, 4 tokens: every cosine 1, no penalty -> 10.
    a = 10 * (1 / math.sqrt(2) + 1 / math.sqrt(3)) / 4 * math.exp(-4 / 72)
    assert cider(["a b", "e f g h"], [("a b c d",), ("e f g h",)]) == pytest.approx((a + 10) / 2, abs=1e-9)
    # the idf comes from the scored set: a single example has idf 0 everywhere, so even a perfect one gets 0
    assert cider(["e f g h"], [("e f g h",)]) == 0.0


def test_meteor_without_java_fails_clearly_and_the_task_says_so_before_training(monkeypatch):
    import shutil

    from prefixlab.tasks import scoring
    from prefixlab.tasks import DataError, build_task

    monkeypatch.setattr(scoring.coco, "_meteor_process", None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(scoring.MetricUnavailableError, match="`java` is not on PATH: install a Java runtime"):
        meteor(["a b"], [("a b",)])
    with pytest.raises(DataError, match=r"task 'webnlg' reports METEOR and CIDEr: METEOR 1.5 .* `java` is not on PATH"):
        build_task("webnlg").check_available()
