"""Hub tasks (xsum, cnn_dailymail, sst2, ag_news): column mapping, label words, split mapping and
carving, local files, and the one-line error when the hub is unreachable. ``datasets.load_dataset``
is replaced by tiny in-memory DatasetDicts; the offline test uses the real loader (HF_HUB_OFFLINE=1)."""

import datasets
import pytest

from prefixlab.data.datamodule import TaskDataModule
from prefixlab.tasks import DataError, build_task
from prefixlab.tasks.hub import SST2, AGNews

TOKENIZER = "embedded:smollm2-135m-instruct"
SPLITS = ("train", "validation", "test")


def fake_hub(monkeypatch, by_name: dict) -> list:
    """Serve ``by_name[name]`` (split -> column dict) from ``datasets.load_dataset``; returns the calls made."""
    calls = []

    def load_dataset(name, *args, **kwargs):
        calls.append((name, args, kwargs))
        return datasets.DatasetDict({split: datasets.Dataset.from_dict(cols) for split, cols in by_name[name].items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def sst2_data(n_train: int = 40) -> dict:
    return {
        "train": {"idx": list(range(n_train)), "sentence": [f"film number {i} is {'good' if i % 2 else 'bad'}" for i in range(n_train)],
                  "label": [i % 2 for i in range(n_train)]},
        "validation": {"idx": [0, 1, 2], "sentence": ["a great film", "a dull film", "  fine\n film "], "label": [1, 0, 1]},
        "test": {"idx": [0, 1], "sentence": ["unlabelled one", "unlabelled two"], "label": [-1, -1]},  # as on the hub
    }


def test_xsum_maps_document_and_summary_and_keeps_the_hub_splits(monkeypatch):
    data = {split: {"document": [f"{split} article {i}\n  text" for i in range(3)] + [""],  # XSum has empty documents
                    "summary": [f"{split} summary {i}" for i in range(4)], "id": ["1", "2", "3", "4"]} for split in SPLITS}
    calls = fake_hub(monkeypatch, {"EdinburghNLP/xsum": data})
    task = build_task("xsum")
    for split in SPLITS:
        examples = task.load_split(split)
        assert [(e.source, e.target, e.references) for e in examples] == [
            (f"{split} article {i} text", f"{split} summary {i}", (f"{split} summary {i}",)) for i in range(3)
        ]  # whitespace normalized, the empty document skipped
    assert calls[0][0] == "EdinburghNLP/xsum" and len(calls) == 1  # loaded once for all splits
    assert task.metric_names == ("rouge1", "rouge2", "rougeL", "rougeLsum")


def test_cnn_dailymail_asks_for_config_3_0_0_and_joins_highlight_lines(monkeypatch):
    data = {split: {"article": ["Some article."], "highlights": ["First point .\nSecond point ."], "id": ["a"]} for split in SPLITS}
    calls = fake_hub(monkeypatch, {"abisee/cnn_dailymail": data})
    (example,) = build_task("cnn_dailymail").load_split("test")
    assert calls[0][:2] == ("abisee/cnn_dailymail", ("3.0.0",))
    assert example.source == "Some article." and example.target == "First point . Second point ."


def test_sst2_label_words_test_is_hub_validation_and_validation_is_carved_from_train(monkeypatch):
    fake_hub(monkeypatch, {"stanfordnlp/sst2": sst2_data()})
    task = build_task("sst2")
    test = task.load_split("test")
    assert [(e.source, e.target) for e in test] == [("a great film", "positive"), ("a dull film", "negative"), ("fine film", "positive")]
    train, validation = task.load_split("train"), task.load_split("validation")
    assert len(validation) == 2 and len(train) == 38  # 5% of 40 distinct sentences
    assert not {e.source for e in train} & {e.source for e in validation}
    assert {e.target for e in train} == {"negative", "positive"} and SST2.labels == ("negative", "positive")
    again = build_task("sst2", split_seed=0).load_split("validation")
    other = [build_task("sst2", split_seed=s).load_split("validation") for s in (1, 2, 3)]
    assert [e.id for e in again] == [e.id for e in validation]
    assert any({e.id for e in o} != {e.id for e in validation} for o in other)


def test_ag_news_label_words_order_and_scoring(monkeypatch):
    labels = [0, 1, 2, 3, 2]
    data = {"train": {"text": [f"news {i}" for i in range(40)], "label": [i % 4 for i in range(40)]},
            "test": {"text": [f"story {i}" for i in range(5)], "label": labels}}
    fake_hub(monkeypatch, {"fancyzhx/ag_news": data})
    task = build_task("ag_news")
    assert AGNews.labels == ("World", "Sports", "Business", "Sci/Tech") and task.labels == AGNews.labels
    test = task.load_split("test")
    assert [e.target for e in test] == [AGNews.labels[i] for i in labels]
    assert len(task.load_split("validation")) == 2 and len(task.load_split("train")) == 38
    # generative exact match after normalization: "sci/tech" and "Sci/Tech." are the label; "science" is wrong
    scores = task.score(["world", "Sports", "business", "sci/tech.", "science"], [(e.target,) for e in test])
    assert scores["accuracy"] == pytest.approx(80.0)
    # per-class F1: World 1, Sports 1, Sci/Tech 1, Business P=1 R=1/2 -> 2/3; macro = (3 + 2/3) / 4
    assert scores["macro_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4)


def test_a_label_outside_the_label_set_names_split_and_row(monkeypatch):
    data = {"train": {"text": ["a", "b", "c"], "label": [0, 7, 1]}, "test": {"text": ["d"], "label": [0]}}
    fake_hub(monkeypatch, {"fancyzhx/ag_news": data})
    with pytest.raises(DataError, match=r"fancyzhx/ag_news \(train split\): row 1: label 7 is not a label of task 'ag_news'"):
        build_task("ag_news").load_split("train")


def test_sst2_never_reads_the_unlabelled_hub_test_split_but_unlabelled_rows_elsewhere_fail(monkeypatch):
    data = sst2_data()
    data["validation"]["label"][1] = -1
    fake_hub(monkeypatch, {"stanfordnlp/sst2": data})
    with pytest.raises(DataError, match=r"\(validation split\): row 1: label -1 .*unlabelled"):
        build_task("sst2").load_split("test")


def test_local_files_with_the_hub_columns(tmp_path):
    for split, hub_split in (("train", "train"), ("test", "validation")):
        datasets.Dataset.from_dict(sst2_data()[hub_split]).to_json(str(tmp_path / f"{hub_split}.jsonl"))
    task = build_task("sst2", data_dir=str(tmp_path))
    task.check_available()
    assert [e.target for e in task.load_split("test")] == ["positive", "negative", "positive"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train.csv").write_text("review,label\nnice,1\n")
    (tmp_path / "other" / "validation.csv").write_text("sentence,label\nnice,positive\n")
    assert [e.target for e in build_task("sst2", data_dir=str(tmp_path / "other")).load_split("test")] == ["positive"]
    with pytest.raises(DataError, match=r"train\.csv \(train split\): no column 'sentence'; it has \['review', 'label'\]"):
        build_task("sst2", data_dir=str(tmp_path / "other")).load_split("train")
    with pytest.raises(DataError, match=r"needs the split\(s\) \['test'\]"):
        build_task("xsum", data_dir=str(tmp_path)).check_available()


def test_unreachable_hub_is_one_line_naming_the_dataset_and_the_fix():
    # the real loader: conftest sets HF_HUB_OFFLINE=1 before datasets is imported, so this fails at once
    with pytest.raises(DataError) as info:
        build_task("xsum").check_available()
    message = str(info.value)
    assert "\n" not in message and "'EdinburghNLP/xsum'" in message
    assert "HF_HUB_OFFLINE=1" in message and "task.data_dir" in message and "(document, summary)" in message and "task=local" in message


def test_hub_error_comes_from_the_datamodule_before_any_tokenizer_or_model(monkeypatch):
    import prefixlab.data.split_datamodule as base  # the DataModule base loads the tokenizer

    def no_loading(*args, **kwargs):
        raise AssertionError("nothing may load before the data check")

    monkeypatch.setattr(base, "load_tokenizer", no_loading)

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'fancyzhx/ag_news' on the Hub (OfflineModeIsEnabled)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"^could not load 'fancyzhx/ag_news' from the Hugging Face hub \(ConnectionError: Couldn't reach"):
        TaskDataModule("ag_news", TOKENIZER)


def test_low_data_subsets_work_for_hub_tasks(monkeypatch):
    fake_hub(monkeypatch, {"stanfordnlp/sst2": sst2_data(n_train=60)})
    make = lambda seed: TaskDataModule("sst2", TOKENIZER, max_source_tokens=16, max_target_tokens=4, train_size=5,
                                       val_size=2, test_size=2, subset_seed=seed, cache_tokenized=False)
    a, b, c = make(0), make(0), make(1)
    for module in (a, b, c):
        module.setup("fit")
    ids = lambda m: [e.example.id for e in m.splits["train"]]
    assert len(ids(a)) == 5 and ids(a) == ids(b) and ids(a) != ids(c)
    assert {e.example.target for e in a.splits["train"]} <= set(SST2.labels) and len(a.splits["test"]) == 2
