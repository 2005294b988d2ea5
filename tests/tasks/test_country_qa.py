"""Closed-book country questions from countryinfo: split by country, SQuAD-style EM / F1."""

import pytest

from prefixlab.tasks import build_task


def test_no_country_in_two_splits_and_split_is_deterministic():
    task = build_task("country_qa")
    countries = {s: {e.id.split("/")[0] for e in task.load_split(s)} for s in ("train", "validation", "test")}
    assert not (countries["train"] & countries["validation"]) and not (countries["train"] & countries["test"])
    assert not (countries["validation"] & countries["test"])
    total = sum(len(c) for c in countries.values())
    assert total > 200 and abs(len(countries["test"]) / total - 0.1) < 0.02
    assert [e.id for e in build_task("country_qa").load_split("test")] == [e.id for e in task.load_split("test")]
    assert {e.id.split("/")[0] for e in build_task("country_qa", split_seed=1).load_split("test")} != countries["test"]


def test_questions_and_answers_come_from_countryinfo():
    examples = {e.id: e for s in ("train", "validation", "test") for e in build_task("country_qa").load_split(s)}
    france = examples["France/capital"]
    assert france.source == "What is the capital of France?" and france.references == ("Paris",)
    assert examples["France/region"].target == "Europe"
    assert examples["France/currencies"].references == ("EUR",)
    assert set(examples["Bolivia/currencies"].references) == {"BOB", "BOV"}  # several values: several references
    assert {e.id.split("/")[1] for e in examples.values()} == {"capital", "region", "subregion", "demonym", "currencies", "callingCodes"}


def test_country_qa_scores_hand_checked():
    task = build_task("country_qa")
    scores = task.score(["The Paris", "Western Europe.", "bov", "+33"],
                        [("Paris",), ("Europe",), ("BOB", "BOV"), ("33",)])
    # EM: paris=paris, "western europe"!="europe", bov matches the 2nd reference, "+33" -> "33": 3/4
    # F1: 1, (P 1/2, R 1 -> 2/3), 1, 1
    assert scores["exact_match"] == pytest.approx(75.0)
    assert scores["f1"] == pytest.approx(100 * (3 + 2 / 3) / 4)
