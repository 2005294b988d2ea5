"""The embedded BBC headline task: split by article, deterministic, about 80/10/10."""

from prefixlab.tasks.scoring import rouge
from prefixlab.tasks import build_task
from prefixlab.tasks.bbc_news import load_articles, split_of


def test_split_is_by_article_disjoint_and_about_80_10_10():
    task = build_task("bbc_headline")
    splits = {s: task.load_split(s) for s in ("train", "validation", "test")}
    ids = {s: {e.id for e in examples} for s, examples in splits.items()}
    assert sum(len(v) for v in ids.values()) == len(load_articles()) == 2225
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"]) and not (ids["validation"] & ids["test"])
    for split, share in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        assert abs(len(ids[split]) / 2225 - share) < 0.03


def test_split_depends_only_on_the_article_key():
    # The assignment is a hash of topic/file: the same on every machine, whatever the file order.
    assert split_of("business/009") == "test"
    assert [split_of(f"tech/{i:03d}") for i in range(1, 6)] == [split_of(f"tech/{i:03d}") for i in range(1, 6)]


def test_examples_have_headline_target_and_body_source():
    example = build_task("bbc_headline").load_split("test")[0]
    assert example.target and "\n" not in example.target
    assert len(example.source.split()) > 50
    assert example.references == (example.target,)


def test_rouge_perfect_and_disjoint_and_known_value():
    assert rouge(["Ethiopia's crop production up 24%"], [("Ethiopia's crop production up 24%",)])["rougeL"] == 100.0
    assert rouge(["alpha beta"], [("gamma delta",)])["rougeL"] == 0.0
    # LCS "the cat" of 2 tokens; precision 2/3, recall 2/2 -> F1 = 0.8
    assert abs(rouge(["the cat sat"], [("the cat",)])["rougeL"] - 80.0) < 1e-9
    # several references: the best counts
    assert rouge(["a b"], [("x y", "a b")])["rougeL"] == 100.0
