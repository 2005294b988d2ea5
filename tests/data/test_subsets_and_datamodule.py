"""Low-data subsets (task.train_size / task.subset_seed) and task options through the datamodule."""

import csv

from prefixlab.data.datamodule import TaskDataModule, take_subset
from prefixlab.tasks import build_task

TOKENIZER = "embedded:smollm2-135m-instruct"


def test_subsets_are_deterministic_per_seed_and_differ_across_seeds():
    examples = build_task("bbc_headline").load_split("train")
    ids = lambda seed: [e.id for e in take_subset(examples, 16, seed)]  # noqa: E731
    assert ids(0) == ids(0) and ids(3) == ids(3)
    assert len(set(ids(0))) == 16 and set(ids(0)) <= {e.id for e in examples}
    assert set(ids(0)) != set(ids(1)) != set(ids(2))
    assert take_subset(examples, None, 0) == examples and take_subset(examples, 10**6, 0) == examples


def test_task_options_reach_the_task_and_eval_batches_carry_all_references(tmp_path):
    with open(tmp_path / "devset.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mr", "ref"])
        for i in range(30):
            writer.writerows([f"name[P{i}], food[Thai]", f"P{i} serves Thai food{'!' * j}"] for j in range(3))
    dm = TaskDataModule("e2e", TOKENIZER, max_source_tokens=32, max_target_tokens=16, train_size=8, val_size=2,
                        test_size=3, batch_size=4, eval_batch_size=4, task_options={"data_dir": str(tmp_path), "split_seed": 0})
    dm.setup("fit")
    assert len(dm.splits["train"]) == 8 and len(dm.splits["test"]) == 3
    batch = next(iter(dm.test_dataloader()))
    assert all(len(refs) == 3 for refs in batch["references"]) and len(set(batch["sources"])) == 3


def test_the_lm_and_encoder_datamodules_share_one_split_skeleton(tmp_path):
    """One base (``data/split_datamodule.py``): sized subsets, the empty-split error, the resumable
    training order and the tokens-per-example figure the run summary prints, for both variants."""
    import pytest

    from prefixlab.data.datamodule import ResumableDataModule
    from prefixlab.data.encoder_data import EncoderDataModule
    from prefixlab.data.resumable import ResumableDataLoader
    from prefixlab.data.split_datamodule import SplitDataModule
    from prefixlab.tasks import DataError
    from prefixlab.training.model_loading import MINILM

    lm = ResumableDataModule("bbc_headline", TOKENIZER, max_source_tokens=48, train_size=6, val_size=2, test_size=3,
                             batch_size=4, cache_tokenized=False)
    encoder = EncoderDataModule("bbc_topic", MINILM, max_source_tokens=48, train_size=6, val_size=2, test_size=3,
                                batch_size=4)
    for dm, tokens in ((lm, lambda e: len(e.prompt_ids) + len(e.target_ids)), (encoder, lambda e: len(e.input_ids))):
        assert isinstance(dm, SplitDataModule)
        dm.setup("fit")
        assert [len(dm.splits[s]) for s in ("train", "validation", "test")] == [6, 2, 3]
        assert isinstance(dm.train_dataloader(), ResumableDataLoader)
        assert dm.mean_train_tokens() == sum(map(tokens, dm.splits["train"])) / 6
        assert [len(b["ids"]) for b in dm.test_dataloader()] == [3]  # eval batches: dataset order, eval_batch_size
    empty = TaskDataModule("bbc_headline", TOKENIZER, train_size=0)
    with pytest.raises(DataError, match="task 'bbc_headline': the train split is empty"):
        empty.setup("fit")
