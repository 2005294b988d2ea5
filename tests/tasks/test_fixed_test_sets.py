"""One fixed test set per task: the same test inputs in every run, seed, training subset and training
size, and large enough shares of a one-file split (``task.split_fractions``) to resolve small effects.
Fixtures are tiny files in the released formats (tmp_path); the shared data is used where present."""

import csv
from pathlib import Path

import pytest

from prefixlab.config import ConfigError
from prefixlab.data.datamodule import TaskDataModule
from prefixlab.tasks import DataError, build_task
from prefixlab.tasks.splits import check_fractions, split_by_key
from prefixlab.tasks.table_to_text import TableToTextOptions

TOKENIZER = "embedded:smollm2-135m-instruct"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
SPLITS = ("train", "validation", "test")


def write_e2e(folder: Path, n_mrs: int = 60) -> Path:
    with open(folder / "devset.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mr", "ref"])
        for i in range(n_mrs):
            writer.writerows([f"name[Place {i}], eatType[pub]", f"Place {i} is a pub, take {j}."] for j in range(2))
    return folder


def split_ids(data_dir: Path, **sizes) -> dict[str, list[str]]:
    dm = TaskDataModule("e2e", TOKENIZER, max_source_tokens=24, max_target_tokens=12, batch_size=4, cache_tokenized=False,
                        task_options={"data_dir": str(data_dir), "split_fractions": [0.45, 0.1, 0.45]}, **sizes)
    dm.setup("fit")
    return {split: sorted(e.example.id for e in dm.splits[split]) for split in SPLITS}


def test_subset_seed_and_train_size_redrew_the_test_set(tmp_path):
    """The bug: the test subset was drawn with task.subset_seed, so subsets 0 and 1 of E2E shared only
    9 of their 24 test MRs and a paired comparison across subsets compared different inputs."""
    data = write_e2e(tmp_path)
    runs = {(subset, train): split_ids(data, train_size=train, val_size=3, test_size=8, subset_seed=subset)
            for subset, train in ((0, 6), (1, 6), (2, 20), (1, None))}
    tests = {key: ids["test"] for key, ids in runs.items()}
    assert len(set(map(tuple, tests.values()))) == 1 and len(tests[(1, None)]) == 8
    # what subset_seed is for still varies with it: the training subset and the validation subset
    assert runs[(0, 6)]["train"] != runs[(1, 6)]["train"] and runs[(0, 6)]["validation"] != runs[(1, 6)]["validation"]


def test_the_whole_test_split_is_the_test_set_with_test_size_null(tmp_path):
    data = write_e2e(tmp_path)
    whole = {e.id for e in build_task("e2e", data_dir=str(data), split_fractions=[0.45, 0.1, 0.45]).load_split("test")}
    assert set(split_ids(data, train_size=6, val_size=3, test_size=None, subset_seed=3)["test"]) == whole
    assert len(whole) == 27  # 45% of 60 MRs


def test_split_fractions_set_the_shares_by_input_and_a_larger_test_share_only_adds_inputs(tmp_path):
    data = write_e2e(tmp_path)
    default = {s: {e.source for e in build_task("e2e", data_dir=str(data)).load_split(s)} for s in SPLITS}
    large = {s: {e.source for e in build_task("e2e", data_dir=str(data), split_fractions=[0.45, 0.1, 0.45]).load_split(s)}
             for s in SPLITS}
    assert [len(default[s]) for s in SPLITS] == [48, 6, 6]  # null: today's 80/10/10
    assert [len(large[s]) for s in SPLITS] == [27, 6, 27]
    assert default["test"] < large["test"]
    assert not (large["train"] & large["test"]) and not (large["validation"] & large["test"])


@pytest.mark.parametrize("fractions, message", [
    ([0.5, 0.1, 0.1], "the shares must sum to 1"),
    ([0.9, 0.1], "expected three shares"),
    ([1.0, 0.0, 0.0], "each split needs a share above 0"),
])
def test_wrong_split_fractions_are_one_error_line_naming_the_setting(tmp_path, fractions, message):
    assert message in check_fractions(fractions)
    with pytest.raises(DataError, match=rf"^task.split_fractions=\[.*\]: {message}"):
        build_task("e2e", data_dir=str(write_e2e(tmp_path)), split_fractions=fractions)
    holds, key, value, allowed = TableToTextOptions(name="e2e", split_fractions=fractions).checks()[0]
    assert (holds, key) == (False, "split_fractions") and message in allowed


def test_split_fractions_are_refused_where_the_splits_are_official(tmp_path):
    for name in ("trainset.csv", "devset.csv", "testset_w_refs.csv"):
        (tmp_path / name).write_text((write_e2e(tmp_path) / "devset.csv").read_text())
    task = build_task("e2e", data_dir=str(tmp_path), split_fractions=[0.45, 0.1, 0.45])
    with pytest.raises(DataError, match=r"holds the official train / validation / test files: set task.split_fractions=null"):
        task.load_split("test")
    with pytest.raises(DataError, match=r"task.data_dir=null reads the hub's official splits"):
        build_task("dart", split_fractions=[0.45, 0.1, 0.45])


def test_split_fractions_compose_as_a_typed_setting_and_are_range_checked():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from prefixlab.cli.train import CONFIG_DIR
    from prefixlab.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        settings = lambda *o: OmegaConf.to_object(compose(config_name="train", overrides=["task=e2e", *o]))  # noqa: E731
        assert settings().task.split_fractions is None
        assert settings("task.split_fractions=[0.45,0.1,0.45]").task.split_fractions == [0.45, 0.1, 0.45]
        with pytest.raises(ConfigError, match=r"^task.split_fractions=\[0.5, 0.1, 0.1\] is out of range: the shares must sum to 1"):
            validate(settings("task.split_fractions=[0.5,0.1,0.1]"))


def test_a_split_that_leaves_nothing_to_train_on_is_refused():
    with pytest.raises(ValueError, match="nothing is left for training"):
        split_by_key(["a", "b", "c"], 0, validation_share=0.1, test_share=0.5)  # 2 test, 1 validation


@pytest.mark.skipif(not (SHARED / "e2e" / "devset.csv").is_file(), reason="needs ../shared/data (the E2E and DART dev sets)")
def test_the_shared_dev_sets_give_test_sets_of_the_protocols_size():
    e2e = build_task("e2e", data_dir=str(SHARED / "e2e"), split_fractions=[0.45, 0.1, 0.45])
    assert [len(e2e.load_split(s)) for s in ("validation", "test")] == [55, 246]
    old_test = {e.id for e in build_task("e2e", data_dir=str(SHARED / "e2e")).load_split("test")}
    assert len(old_test) == 55 and old_test < {e.id for e in e2e.load_split("test")}
    assert len(build_task("dart", data_dir=str(SHARED / "dart")).load_split("test")) == 272


def test_the_bbc_test_set_is_all_223_test_articles_with_test_size_null():
    dm = TaskDataModule("bbc_headline", TOKENIZER, max_source_tokens=16, max_target_tokens=8, train_size=4, val_size=2,
                        test_size=None, subset_seed=1, cache_tokenized=False)
    dm.setup("fit")
    ids = sorted(e.example.id for e in dm.splits["test"])
    assert ids == sorted(e.id for e in build_task("bbc_headline").load_split("test")) and len(ids) == 223
