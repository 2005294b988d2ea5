"""The squad task on a tiny in-memory SQuAD: the hub code path (``datasets.load_dataset``
monkeypatched), the released-files path, the splits, both views (extractive, generative), and
the one-line error when the hub cannot be reached."""

from __future__ import annotations

import pytest

from prefixlab.tasks import DataError, build_task
from prefixlab.tasks import squad as squad_module

from .squad_files import hub_rows, write_squad


@pytest.fixture
def fake_hub(monkeypatch):
    import datasets

    calls = []

    def load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        return hub_rows(split)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    squad_module.squad_rows.cache_clear()
    yield calls
    squad_module.squad_rows.cache_clear()


def test_hub_path_splits_by_article_and_uses_the_dev_set_as_test(fake_hub):
    task = build_task("squad")
    spans = {split: task.load_spans(split) for split in ("train", "validation", "test")}
    assert {call[0] for call in fake_hub} == {"rajpurkar/squad"}
    articles = {split: {e.id.split("-")[0] for e in examples} for split, examples in spans.items()}
    assert len(spans["train"]) == 18 and len(spans["validation"]) == 2  # 1 of 10 train articles held out
    assert not articles["train"] & articles["validation"]
    assert [e.id for e in spans["test"]] == [r["id"] for r in hub_rows("validation")]
    # deterministic, and the seed chooses the held-out article
    assert [e.id for e in build_task("squad").load_spans("validation")] == [e.id for e in spans["validation"]]
    others = {tuple(e.id for e in build_task("squad", split_seed=s).load_spans("validation")) for s in range(6)}
    assert len(others) > 1


def test_extractive_and_generative_views(fake_hub):
    task = build_task("squad")
    river = next(e for e in task.load_spans("test") if e.id.endswith("-river"))
    assert river.context[river.answer_start: river.answer_end] == river.answer == "Yonne"
    assert river.references == ("Yonne", "The river Yonne")  # every annotator's answer
    generative = next(e for e in task.load_split("test") if e.id == river.id)
    assert generative.source.startswith(f"Question: {river.question}\nPassage: ")  # question first: truncation keeps it
    assert generative.target == "Yonne" and generative.references == river.references
    # scored against all gold answers: the longer annotation is an exact match too
    assert task.score(["the river Yonne"], [river.references]) == {"exact_match": 100.0, "f1": 100.0}


def test_released_files_give_the_same_examples_as_the_hub(fake_hub, tmp_path):
    from_hub = {s: build_task("squad").load_spans(s) for s in ("train", "validation", "test")}
    local = build_task("squad", data_dir=str(write_squad(tmp_path / "squad")))
    assert {s: local.load_spans(s) for s in from_hub} == from_hub


def test_hub_failure_is_one_line_naming_the_dataset_and_the_fix(monkeypatch):
    import datasets

    def offline(name, split=None, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    squad_module.squad_rows.cache_clear()
    try:
        with pytest.raises(DataError) as caught:
            build_task("squad").load_spans("train")
    finally:
        squad_module.squad_rows.cache_clear()
    message = str(caught.value)
    assert "\n" not in message
    assert "'rajpurkar/squad'" in message and "OfflineModeIsEnabled" in message and "task.data_dir" in message


def test_a_misplaced_answer_start_names_the_example(tmp_path):
    task = build_task("squad", data_dir=str(write_squad(tmp_path / "bad", bad_answer_start=True)))
    squad_module.squad_rows.cache_clear()
    with pytest.raises(DataError, match=r"example 'train0-colour': answer 'blue' is not in its context at character 2"):
        task.load_spans("train")
    squad_module.squad_rows.cache_clear()
