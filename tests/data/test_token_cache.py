"""Tokenized splits cached between runs ($PREFIXLAB_CACHE/tokenized): a second setup encodes nothing;
another max_source_tokens, a tokenizer changed in place (same folder, new vocabulary) or changed data
misses; a corrupt entry is rebuilt. Encode calls are counted on the formatter."""

import csv
import shutil
from pathlib import Path

import pytest

from prefixlab.data.datamodule import TaskDataModule
from prefixlab.data.formatting import PromptFormatter
from prefixlab.training.model_loading import load_tokenizer, resolve
from prefixlab.tasks.table_to_text import _local_groups

SMOLLM2 = "embedded:smollm2-135m-instruct"


@pytest.fixture
def setting(tmp_path, monkeypatch):
    """A tokenizer folder of our own (so it can be changed in place), a tiny E2E file, an empty cache
    root, and a counter of prompt encodings."""
    load_tokenizer(SMOLLM2).save_pretrained(tmp_path / "tok")  # resolved before the cache root moves
    shutil.copy(Path(resolve(SMOLLM2)) / "config.json", tmp_path / "tok")  # a local model folder needs its config
    monkeypatch.setenv("PREFIXLAB_CACHE", str(tmp_path / "cache"))
    write_e2e(tmp_path / "data" / "devset.csv")
    calls = {"n": 0}
    original = PromptFormatter.prompt_ids

    def counted(self, source):
        calls["n"] += 1
        return original(self, source)

    monkeypatch.setattr(PromptFormatter, "prompt_ids", counted)
    return tmp_path, calls


def write_e2e(path, suffix=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mr", "ref"])
        writer.writerows([f"name[P{i}], food[Thai]", f"P{i} serves Thai food{suffix}."] for i in range(20))


def setup(root, **overrides):
    options = {"max_source_tokens": 32, "max_target_tokens": 16, "val_size": 2, "test_size": 2}
    options.update(overrides)
    dm = TaskDataModule("e2e", str(root / "tok"), task_options={"data_dir": str(root / "data")}, **options)
    dm.setup("fit")
    return dm


def as_ids(dm):
    return {s: [(e.example.id, e.prompt_ids, e.target_ids) for e in v] for s, v in dm.splits.items()}


def test_second_setup_hits_the_cache_with_identical_ids(setting):
    root, calls = setting
    first = setup(root)
    encoded = calls["n"]
    assert encoded == 16 + 2 + 2 and first.token_cache.hits == []  # 16 train pairs (16 MRs), 2 + 2 MRs
    second = setup(root)
    assert calls["n"] == encoded and second.token_cache.hits == ["train", "validation", "test"]
    assert as_ids(second) == as_ids(first)
    assert len(list((root / "cache" / "tokenized" / "e2e").iterdir())) == 3


def test_prompt_settings_tokenizer_and_data_changes_miss(setting):
    root, calls = setting
    base = as_ids(setup(root))
    n = calls["n"]
    shorter = setup(root, max_source_tokens=4)
    assert calls["n"] == n + 20 and shorter.token_cache.hits == []
    assert as_ids(shorter) != base
    n = calls["n"]
    # the same tokenizer folder, changed in place: one added token alters the vocabulary, not the name
    tokenizer = load_tokenizer(str(root / "tok"))
    tokenizer.add_tokens(["Thai"])
    tokenizer.save_pretrained(root / "tok")
    changed = setup(root)
    assert calls["n"] == n + 20 and changed.token_cache.hits == []
    n = calls["n"]
    write_e2e(root / "data" / "devset.csv", suffix="!")  # every reference (and so every target) changes; the MRs do not
    _local_groups.cache_clear()  # the task memoizes files per process; a new run reads them again
    edited = setup(root)
    assert calls["n"] == n + 20 and edited.token_cache.hits == []
    assert all(e.example.target.endswith("!.") for e in edited.splits["train"])


def test_corrupt_cache_entry_is_rebuilt_not_a_crash(setting):
    root, calls = setting
    first = as_ids(setup(root))
    entries = sorted((root / "cache" / "tokenized" / "e2e").iterdir())
    arrow = next(entries[0].glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: len(arrow.read_bytes()) // 2])  # truncated
    shutil.rmtree(entries[1])
    entries[1].mkdir()  # an empty folder where an entry should be
    n = calls["n"]
    again = setup(root)
    assert as_ids(again) == first
    assert calls["n"] > n and len(again.token_cache.hits) == 1  # two rebuilt, one hit
    n = calls["n"]
    setup(root)
    assert calls["n"] == n  # the rebuilt entries are good


def test_a_flipped_bit_in_a_cached_token_id_is_caught_by_the_checksum_and_rebuilt(setting):
    # regression: datasets reads an Arrow file with one flipped bit in a token id without any error,
    # and that changed id silently changed the trained prefix
    import struct

    import datasets

    root, calls = setting
    first = as_ids(setup(root))
    entry = next(e for e in (root / "cache" / "tokenized" / "e2e").iterdir() if e.name.startswith("train-"))
    arrow = next(entry.glob("*.arrow"))
    ids = datasets.load_from_disk(str(entry))[0]["prompt_ids"][:4]
    data = bytearray(arrow.read_bytes())
    for fmt in ("<4q", "<4i"):  # however the list of ids is laid out, find its first four values
        at = data.find(struct.pack(fmt, *ids))
        if at >= 0:
            break
    assert at >= 0, "the cached ids were not found in the Arrow file"
    data[at] ^= 1  # the lowest bit of the first id
    arrow.write_bytes(bytes(data))
    assert datasets.load_from_disk(str(entry))[0]["prompt_ids"][0] == ids[0] ^ 1  # read back without any error
    n = calls["n"]
    again = setup(root)
    assert as_ids(again) == first  # the damaged entry was not used
    assert calls["n"] > n and "train" not in again.token_cache.hits
