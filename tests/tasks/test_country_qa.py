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


# ---- country_qa_extractive: the same questions over a context paragraph ---------------------------
def test_extractive_variant_has_the_same_questions_in_the_same_splits():
    for seed in (0, 1):
        closed, extractive = build_task("country_qa", split_seed=seed), build_task("country_qa_extractive", split_seed=seed)
        for split in ("train", "validation", "test"):
            books = {e.id: e for e in closed.load_split(split)}
            spans = {e.id: e for e in extractive.load_spans(split)}
            assert books.keys() == spans.keys()  # so also no country in two splits
            assert all(spans[i].question == books[i].source and spans[i].references == books[i].references for i in spans)


def test_extractive_paragraph_states_the_facts_and_the_answer_is_its_span():
    spans = {e.id: e for s in ("train", "validation", "test") for e in build_task("country_qa_extractive").load_spans(s)}
    france = spans["France/capital"]
    assert "The capital of France is Paris." in france.context and "France lies in the world region Europe." in france.context
    assert france.context[france.answer_start: france.answer_end] == "Paris"
    # one paragraph per country, shared by its questions, each answer at its own place
    assert {spans[f"France/{f}"].context for f in ("capital", "region", "subregion", "currencies")} == {france.context}
    region, subregion = spans["France/region"], spans["France/subregion"]
    assert (region.answer, subregion.answer) == ("Europe", "Western Europe")
    assert region.context[region.answer_start - len("world region "): region.answer_start] == "world region "
    bolivia = spans["Bolivia/currencies"]
    assert "is BOB and BOV." in bolivia.context and bolivia.answer == "BOB" and set(bolivia.references) == {"BOB", "BOV"}
    # the sentence order varies between countries (a span head cannot answer by position alone), and is fixed
    firsts = {e.context.split(". ")[0].replace(e.id.split("/")[0], "X") for e in spans.values()}
    assert len(firsts) > 2
    again = {e.id: e for e in build_task("country_qa_extractive").load_spans("test")}
    assert all(again[i] == spans[i] for i in again)


def test_extractive_variant_for_lms_is_question_then_paragraph():
    example = next(e for e in build_task("country_qa_extractive").load_split("test") if e.id.endswith("/capital"))
    question, passage = example.source.split("\n")
    assert question.startswith("Question: What is the capital of ") and passage.startswith("Passage: ")
    assert example.target in passage
