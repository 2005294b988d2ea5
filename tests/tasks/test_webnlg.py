"""WebNLG: hub-format rows (category, modified_triple_sets, lex) -> linearized triples with all their
references; seen / unseen test categories computed from the train split; local files; clear errors."""

import datasets
import pytest

from prefixlab.tasks import DataError, build_task
from prefixlab.tasks.table_to_text import linearize_webnlg

SEEN, UNSEEN = ("Airport", "Building"), ("Athlete",)


def entry(category: str, i: int, n_refs: int = 2) -> dict:
    return {
        "category": category,
        "modified_triple_sets": {"mtriple_set": [[f"{category}_{i} | location | City_{i}", f"{category}_{i} | height | {i}_m"]]},
        "lex": {"comment": ["good"] * n_refs, "lid": [f"Id{j}" for j in range(n_refs)],
                "text": [f"{category} {i} is in City {i}, version {j}." for j in range(n_refs)], "lang": [""] * n_refs},
    }


def hub_data() -> dict[str, list[dict]]:
    return {
        "train": [entry(c, i) for c in SEEN for i in range(4)],
        "dev": [entry(c, 10 + i) for c in SEEN for i in range(2)],
        "test": [entry(c, 20 + i, n_refs=3) for c in SEEN + UNSEEN for i in range(3)],
    }


@pytest.fixture
def fake_webnlg(monkeypatch):
    calls = []

    def load_dataset(name, *args, **kwargs):
        calls.append((name, args))
        return datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s, rows in hub_data().items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_linearization_and_multi_reference_grouping(fake_webnlg):
    assert linearize_webnlg(["John_E_Blaha | birthDate | 1942_08_26", "John_E_Blaha | occupation | Fighter_pilot"]) == (
        "John E Blaha | birthDate | 1942 08 26 || John E Blaha | occupation | Fighter pilot")
    task = build_task("webnlg")
    test = task.load_split("test")
    assert fake_webnlg[0] == ("webnlg-challenge/web_nlg", ("webnlg_challenge_2017",))
    assert len(test) == 9 and all(len(e.references) == 3 and e.target == e.references[0] for e in test)
    first = next(e for e in test if e.source.startswith("Airport 20 "))
    assert first.source == "Airport 20 | location | City 20 || Airport 20 | height | 20 m"
    assert first.references == tuple(f"Airport 20 is in City 20, version {j}." for j in range(3))
    train = task.load_split("train")
    assert len(train) == 16 and len({e.source for e in train}) == 8  # one example per (input, reference)
    assert len(task.load_split("validation")) == 4  # the dev split
    assert task.metric_names == ("bleu", "nist", "meteor", "rougeL", "cider")


def test_seen_and_unseen_test_categories_partition_the_test_split(fake_webnlg):
    every = {e.source for e in build_task("webnlg").load_split("test")}
    seen = build_task("webnlg", test_categories="seen")
    unseen = build_task("webnlg", test_categories="unseen")
    seen_sources = {e.source for e in seen.load_split("test")}
    unseen_sources = {e.source for e in unseen.load_split("test")}
    assert seen_sources | unseen_sources == every and not seen_sources & unseen_sources
    categories = seen.categories("test")
    assert {categories[s] for s in seen_sources} == set(SEEN) and {categories[s] for s in unseen_sources} == set(UNSEEN)
    # train and validation do not change with the choice
    assert [e.id for e in seen.load_split("train")] == [e.id for e in unseen.load_split("train")]


def test_bad_category_choice_and_missing_category_column_are_clear(tmp_path):
    with pytest.raises(DataError, match=r"task.test_categories='unknown': expected one of all, seen, unseen"):
        build_task("webnlg", test_categories="unknown")
    for split, rows in hub_data().items():
        datasets.Dataset.from_list([{k: v for k, v in r.items() if k != "category"} for r in rows]).to_json(str(tmp_path / f"{split}.jsonl"))
    assert len(build_task("webnlg", data_dir=str(tmp_path)).load_split("test")) == 9  # 'all' needs no category
    with pytest.raises(DataError, match=r"test\.jsonl \(test split\): no 'category' column"):
        build_task("webnlg", data_dir=str(tmp_path), test_categories="unseen").load_split("test")


def test_local_files_in_the_hub_format_and_malformed_rows(tmp_path):
    datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s, rows in hub_data().items()}).save_to_disk(str(tmp_path / "saved"))
    task = build_task("webnlg", data_dir=str(tmp_path / "saved"), test_categories="unseen")
    assert {e.source.split(" ")[0] for e in task.load_split("test")} == {"Athlete"}
    bad = hub_data()
    bad["test"][1]["modified_triple_sets"] = {"mtriple_set": [["only | two"]]}
    for split, rows in bad.items():
        datasets.Dataset.from_list(rows).to_json(str(tmp_path / f"{split}.jsonl"))
    with pytest.raises(DataError, match=r"test\.jsonl \(test split\): row 1: expected modified_triple_sets"):
        build_task("webnlg", data_dir=str(tmp_path)).load_split("test")


def test_webnlg_hub_failure_is_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'webnlg-challenge/web_nlg' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"^could not load 'webnlg-challenge/web_nlg' \(config 'webnlg_challenge_2017'\).*task\.data_dir[^\n]*$"):
        build_task("webnlg").check_available()
