"""Topic extrapolation for bbc_headline (train on some topics, test on others, like the paper's XSum
news -> sports): no test-topic article reaches train or validation, the split is deterministic,
and bad topic lists fail with one clear line."""

import pytest

from prefixlab.config import ConfigError, TrainConfig, validate
from prefixlab.methods.prefix import PrefixOptions
from prefixlab.tasks.bbc_news import BBCHeadlineOptions
from prefixlab.tasks.table_to_text import WebNLGOptions
from prefixlab.tasks import DataError, build_task
from prefixlab.tasks.bbc_news import TOPICS, load_articles, split_of

SPLITS = ("train", "validation", "test")


def topics_of(examples):
    return {e.id.split("/")[0] for e in examples}


def test_train_on_news_topics_test_on_sports():
    task = build_task("bbc_headline", train_topics=["business", "politics", "tech"], test_topics=["sports"])
    splits = {s: task.load_split(s) for s in SPLITS}
    assert topics_of(splits["train"]) == topics_of(splits["validation"]) == {"business", "politics", "tech"}
    assert topics_of(splits["test"]) == {"sports"}
    # every sports article is a test article, whatever its hash split; none of them is trained on
    sports = [a["key"] for a in load_articles() if a["topic"] == "sports"]
    assert sorted(e.id for e in splits["test"]) == sorted(sports)
    assert {split_of(e.id) for e in splits["test"]} == set(SPLITS)
    # train and validation keep the usual hash split, restricted to the train topics
    usual = build_task("bbc_headline")
    for split in ("train", "validation"):
        expected = [e.id for e in usual.load_split(split) if e.id.split("/")[0] in {"business", "politics", "tech"}]
        assert [e.id for e in splits[split]] == expected
    assert not {e.id for e in splits["train"]} & {e.id for e in splits["test"]}
    # deterministic
    again = build_task("bbc_headline", train_topics=["tech", "politics", "business"], test_topics=["sports"])
    assert [e.id for e in again.load_split("test")] == [e.id for e in splits["test"]]


def test_one_side_alone_means_the_other_topics():
    only_test = build_task("bbc_headline", test_topics=["sports"])
    assert topics_of(only_test.load_split("train")) == set(TOPICS) - {"sports"}
    only_train = build_task("bbc_headline", train_topics=["business"])
    assert topics_of(only_train.load_split("test")) == set(TOPICS) - {"business"}
    # without topics: the usual split, all five topics on every side
    assert topics_of(build_task("bbc_headline").load_split("test")) == set(TOPICS)


@pytest.mark.parametrize("options, message", [
    ({"train_topics": ["sport"]}, r"task.train_topics=\['sport'\]: unknown topic\(s\) \['sport'\]; the topics are business"),
    ({"train_topics": ["tech"], "test_topics": ["tech", "sports"]}, r"share \['tech'\]: an extrapolation split needs disjoint topics"),
    ({"train_topics": list(TOPICS)}, r"each side needs at least one topic"),
])
def test_bad_topic_lists_are_one_clear_error(options, message):
    with pytest.raises(DataError, match=message):
        build_task("bbc_headline", **options)


def test_overlapping_topics_fail_in_config_validation_and_other_tasks_reject_topics():
    # the prefix method's MLP width (the dataclass default is null; conf/method sets it)
    cfg = TrainConfig(method=PrefixOptions(name="prefix", mid_dim=512), task=BBCHeadlineOptions(name="bbc_headline"))
    cfg.logger.csv = True  # conf/logger/csv.yaml's choice: the bare schema turns no logger on
    validate(cfg)
    cfg.task.train_topics, cfg.task.test_topics = ["tech", "sports"], ["sports"]
    with pytest.raises(ConfigError, match=r"task.test_topics=\['sports'\] is out of range: must not share topics"):
        validate(cfg)
    cfg.task = WebNLGOptions(name="webnlg", test_categories="unseeen")  # webnlg's key (its own schema)
    with pytest.raises(ConfigError, match="task.test_categories='unseeen' is out of range"):
        validate(cfg)
    with pytest.raises(DataError, match="task.test_topics=\\['sports'\\] does not apply to task 'bbc_topic'"):
        build_task("bbc_topic", test_topics=["sports"])
