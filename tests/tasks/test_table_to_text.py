"""E2E and DART: multi-reference grouping, splits by input, linearization, local files and hub errors.
Fixtures are tiny files in the released formats, built in tmp_path (no shared data needed)."""

import csv
import json
from pathlib import Path

import pytest

from prefixlab.tasks import DataError, build_task
from prefixlab.tasks.table_to_text import linearize_triples

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
SPLITS = ("train", "validation", "test")


def write_e2e(path: Path, n_mrs: int = 30) -> dict[str, list[str]]:
    """MR i gets 1 + i % 3 references; returns mr -> references."""
    refs = {f"name[Place {i}], eatType[pub], area[riverside]": [f"Place {i} is a pub by the river, take {j}." for j in range(1 + i % 3)]
            for i in range(n_mrs)}
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mr", "ref"])
        for mr, texts in refs.items():
            writer.writerows([mr, t] for t in texts)
    return refs


def load_all(task):
    return {split: task.load_split(split) for split in SPLITS}


def test_e2e_rows_of_one_mr_are_one_test_example_with_all_references(tmp_path):
    refs = write_e2e(tmp_path / "devset.csv")
    splits = load_all(build_task("e2e", data_dir=str(tmp_path)))
    for split in ("validation", "test"):
        sources = [e.source for e in splits[split]]
        assert len(sources) == len(set(sources))  # one example per MR
        for example in splits[split]:
            assert example.references == tuple(refs[example.source]) and example.target == example.references[0]
    # train: one example per (MR, reference) pair, each carrying all references of its MR
    train_mrs = {e.source for e in splits["train"]}
    assert len(splits["train"]) == sum(len(refs[mr]) for mr in train_mrs)
    assert {e.target for e in splits["train"]} == {r for mr in train_mrs for r in refs[mr]}
    assert len({e.id for e in splits["train"]}) == len(splits["train"])


def test_e2e_split_is_by_mr_80_10_10_and_deterministic(tmp_path):
    write_e2e(tmp_path / "devset.csv")
    splits = load_all(build_task("e2e", data_dir=str(tmp_path)))
    mrs = {split: {e.source for e in examples} for split, examples in splits.items()}
    assert not (mrs["train"] & mrs["validation"]) and not (mrs["train"] & mrs["test"]) and not (mrs["validation"] & mrs["test"])
    assert [len(mrs[s]) for s in SPLITS] == [24, 3, 3]
    again = load_all(build_task("e2e", data_dir=str(tmp_path / "devset.csv")))  # the file itself works too
    assert {s: [e.id for e in again[s]] for s in SPLITS} == {s: [e.id for e in splits[s]] for s in SPLITS}
    other_seed = build_task("e2e", data_dir=str(tmp_path), split_seed=1).load_split("test")
    assert {e.source for e in other_seed} != mrs["test"]


def test_e2e_three_official_files_are_the_splits(tmp_path):
    for name in ("trainset.csv", "devset.csv", "testset_w_refs.csv"):
        write_e2e(tmp_path / name, n_mrs=4)
    task = build_task("e2e", data_dir=str(tmp_path))
    assert len(task.load_split("test")) == 4 and len(task.load_split("train")) == 1 + 2 + 3 + 1


def test_e2e_missing_column_and_missing_folder_are_clear_errors(tmp_path):
    (tmp_path / "devset.csv").write_text("meaning,ref\nname[A],A.\n")
    with pytest.raises(DataError, match=r"devset\.csv: missing column\(s\) \['mr'\]"):
        build_task("e2e", data_dir=str(tmp_path)).load_split("train")
    with pytest.raises(DataError, match="does not exist"):
        build_task("e2e", data_dir=str(tmp_path / "nope")).load_split("train")


def test_dart_linearization_and_grouping_by_tripleset(tmp_path):
    entries = [
        {"tripleset": [[f"S{i}", "LOCATION", f"City {i}"], [f"S{i}", "FOUNDED", str(1900 + i)]],
         "annotations": [{"source": "x", "text": f"S{i} is in City {i}."}, {"source": "y", "text": f"S{i}, founded {1900 + i}."}]}
        for i in range(20)
    ]
    entries.append(dict(entries[0], annotations=[{"source": "z", "text": "A third text for S0."}]))  # same tripleset again
    (tmp_path / "dart-v1.1.1-full-dev.json").write_text(json.dumps(entries))
    assert linearize_triples(entries[0]["tripleset"]) == "S0 | LOCATION | City 0 || S0 | FOUNDED | 1900"
    splits = load_all(build_task("dart", data_dir=str(tmp_path)))
    sources = {s: [e.source for e in splits[s]] for s in SPLITS}
    assert [len(set(sources[s])) for s in SPLITS] == [16, 2, 2]
    assert not set(sources["train"]) & (set(sources["validation"]) | set(sources["test"]))
    everything = {e.source: e.references for s in SPLITS for e in splits[s]}
    assert everything["S0 | LOCATION | City 0 || S0 | FOUNDED | 1900"] == ("S0 is in City 0.", "S0, founded 1900.", "A third text for S0.")


def test_dart_malformed_entry_names_file_and_entry(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([{"tripleset": [["a", "b"]], "annotations": []}]))
    with pytest.raises(DataError, match=r"d\.json: entry 0: tripleset"):
        build_task("dart", data_dir=str(tmp_path / "d.json")).load_split("test")


def test_hub_failure_is_one_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    for name, hub in (("e2e", "GEM/e2e_nlg"), ("dart", "GEM/dart")):
        with pytest.raises(DataError, match=f"could not load '{hub}'.*task.data_dir"):
            build_task(name).load_split("test")


def test_hub_rows_are_grouped_like_local_files(monkeypatch):
    import datasets

    rows = {"train": [{"meaning_representation": "name[A]", "target": "A.", "references": []},
                      {"meaning_representation": "name[A]", "target": "It is A.", "references": []}],
            "test": [{"meaning_representation": "name[B]", "target": "B.", "references": ["B.", "It is B."]}]}
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, **kwargs: rows[split])
    task = build_task("e2e")
    assert [e.target for e in task.load_split("train")] == ["A.", "It is A."]
    assert [e.references for e in task.load_split("test")] == [("B.", "It is B.")]


def test_options_a_task_does_not_take_are_rejected():
    with pytest.raises(DataError, match="task.train_file='x.csv' does not apply to task 'e2e'"):
        build_task("e2e", train_file="x.csv")


@pytest.mark.skipif(not (SHARED / "e2e" / "devset.csv").is_file(), reason="shared reference data not on this machine")
def test_real_e2e_devset_splits_by_mr():
    splits = load_all(build_task("e2e", data_dir=str(SHARED / "e2e")))
    mrs = [{e.source for e in splits[s]} for s in SPLITS]
    assert [len(m) for m in mrs] == [437, 55, 55]  # 547 MRs, as the README and conf/task/e2e.yaml say
    assert not (mrs[0] & mrs[1] or mrs[0] & mrs[2] or mrs[1] & mrs[2])
    assert sum(len(e.references) for e in splits["test"]) > 5 * len(splits["test"])  # ~8.5 references per MR


@pytest.mark.skipif(not (SHARED / "dart").is_dir(), reason="shared reference data not on this machine")
def test_real_dart_devset_splits_by_tripleset():
    splits = load_all(build_task("dart", data_dir=str(SHARED / "dart")))
    assert [len({e.source for e in splits[s]}) for s in SPLITS] == [2177, 272, 272]
