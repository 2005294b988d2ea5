"""BBC topic classification: labels are the five topic names, same article split as the headline task."""

import pytest

from prefixlab.tasks import DataError, build_task
from prefixlab.tasks.bbc_news import TOPICS, split_of


def test_topic_examples_follow_the_headline_split_and_use_topic_labels():
    topic, headline = build_task("bbc_topic"), build_task("bbc_headline")
    for split in ("validation", "test"):
        examples = topic.load_split(split)
        assert [e.id for e in examples] == [e.id for e in headline.load_split(split)]
        assert {e.target for e in examples} == set(TOPICS)
        assert all(e.references == (e.target,) and e.id.startswith(e.target + "/") for e in examples)
    assert split_of("business/009") == "test"


def test_topic_score_is_exact_match_after_normalization():
    task = build_task("bbc_topic")
    scores = task.score(["Sports.", " tech", "politics"], [("sports",), ("tech",), ("business",)])
    assert scores["accuracy"] == pytest.approx(200 / 3)
    assert set(scores) == set(task.metric_names)


def test_a_label_outside_the_label_set_names_the_file(tmp_path):
    for topic in ("tech", "weather"):
        (tmp_path / topic).mkdir()
        (tmp_path / topic / "001.txt").write_text("A headline\n\nThe body of the article.\n")
    from prefixlab.tasks.bbc_news import load_articles

    load_articles.cache_clear()  # keyed by folder; clear so the embedded corpus is not evicted mid-test
    try:
        with pytest.raises(DataError, match=r"weather/001\.txt: topic folder 'weather' is not one of the labels"):
            build_task("bbc_topic", data_dir=str(tmp_path)).load_split("train")
    finally:
        load_articles.cache_clear()
