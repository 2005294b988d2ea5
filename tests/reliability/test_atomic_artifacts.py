"""Every artifact is replaced atomically: a write interrupted midway (an exception, or
SIGKILL of the writing process) leaves the previous file whole and valid at the target path."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from prefixlab.run import artifacts
from prefixlab.run.artifacts import atomic_replace_dir, atomic_write
from prefixlab.run.runs import AtomicCheckpointIO, write_results


class Crash(Exception):
    pass


def half_then_crash(data: bytes):
    def write(tmp):
        tmp.write_bytes(data[: len(data) // 2])
        raise Crash("disk went away")

    return write


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write(target, lambda tmp: tmp.write_text('{"status": "completed"}'))
    with pytest.raises(Crash):
        atomic_write(target, half_then_crash(b'{"status": "interrupted", "step": 3}'))
    assert json.loads(target.read_text()) == {"status": "completed"}
    assert leftovers(tmp_path) == []


def test_metrics_and_predictions_survive_a_serializer_failing_midway(tmp_path, monkeypatch):
    write_results(tmp_path, {"status": "completed", "steps": 6}, [{"id": "a", "prediction": "x"}])
    before = {name: (tmp_path / name).read_bytes() for name in ("metrics.json", "predictions.jsonl")}

    def failing_write_text(self, text, *args, **kwargs):
        with open(self, "w") as handle:
            handle.write(text[: len(text) // 2])
        raise Crash("serializer died")

    monkeypatch.setattr(type(tmp_path), "write_text", failing_write_text)
    with pytest.raises(Crash):
        write_results(tmp_path, {"status": "failed"}, [{"id": "b", "prediction": "y" * 1000}])
    with pytest.raises(Crash):
        write_results(tmp_path, {"status": "failed"}, None)
    monkeypatch.undo()
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"
    assert leftovers(tmp_path) == []


def test_the_exported_prefix_survives_a_failing_export(tmp_path, monkeypatch):
    import safetensors.torch

    from prefixlab.engine.export import ExportedPrefix, load_prefix, save_prefix
    from prefixlab.engine.geometry import PrefixGeometry, SiteGeometry
    from prefixlab.engine.injection import PrefixActivations, SitePrefix

    geometry = PrefixGeometry("llama", {"decoder_self": SiteGeometry(num_layers=2, num_kv_heads=1, head_dim=4)})

    def exported(fill: float) -> ExportedPrefix:
        site = SitePrefix(keys=torch.full((2, 1, 1, 3, 4), fill), values=torch.full((2, 1, 1, 3, 4), -fill))
        return ExportedPrefix(PrefixActivations({"decoder_self": site}), geometry, "tiny", 3, "prefix")

    save_prefix(tmp_path / "prefix", exported(1.0))
    real_save_file = safetensors.torch.save_file

    def save_half(tensors, filename, *args, **kwargs):
        real_save_file(tensors, filename, *args, **kwargs)
        with open(filename, "r+b") as handle:
            handle.truncate(os.path.getsize(filename) // 2)
        raise Crash("killed while writing")

    monkeypatch.setattr(safetensors.torch, "save_file", save_half)
    with pytest.raises(Crash):
        save_prefix(tmp_path / "prefix", exported(2.0))
    monkeypatch.undo()
    loaded = load_prefix(tmp_path / "prefix")
    assert torch.equal(loaded.activations.sites["decoder_self"].keys, torch.full((2, 1, 1, 3, 4), 1.0))
    assert leftovers(tmp_path) == []


def test_a_folder_swap_that_fails_halfway_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "trained"
    atomic_replace_dir(target, lambda work: (work / "weights").write_text("old"))
    real_rename = type(target).rename

    def rename(self, destination):
        if self.name.startswith(".trained.") and not self.name.endswith(".old"):  # the new folder moving in
            raise Crash("power cut between the two renames")
        return real_rename(self, destination)

    monkeypatch.setattr(type(target), "rename", rename)
    with pytest.raises(Crash):
        atomic_replace_dir(target, lambda work: (work / "weights").write_text("new"))
    monkeypatch.undo()
    assert (target / "weights").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_checkpoint_save_that_fails_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.ones(3)}}, path)
    real_save = torch.save

    def save_garbage(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip")
        raise Crash("killed while saving")

    monkeypatch.setattr(torch, "save", save_garbage)
    with pytest.raises(Crash):
        io.save_checkpoint({"global_step": 4, "state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True)["global_step"] == 2
    assert leftovers(tmp_path) == []


def test_artifacts_get_the_usual_file_modes_not_tempfiles_private_ones(tmp_path):
    atomic_write(tmp_path / "metrics.json", lambda tmp: tmp.write_text("{}"))
    atomic_replace_dir(tmp_path / "prefix", lambda work: (work / "a").write_text("x"))
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~artifacts._UMASK
    assert (tmp_path / "prefix").stat().st_mode & 0o777 == 0o777 & ~artifacts._UMASK


WRITER = """
import sys, time
from pathlib import Path
from prefixlab.run.artifacts import atomic_write, atomic_write_jsonl

target = Path(sys.argv[1])
atomic_write_jsonl(target, [{"id": i, "prediction": "old"} for i in range(100)])

def slow_large_write(tmp):
    with open(tmp, "w") as handle:
        for i in range(100000):  # about 6 MB, flushed in pieces, slowly
            handle.write('{"id": %d, "prediction": "new"}\\n' % i)
            if i % 2000 == 0:
                handle.flush()
                time.sleep(0.05)

atomic_write(target, slow_large_write)
"""


@pytest.mark.cli  # it starts a process (the lock holder / the writer it kills)
def test_sigkill_during_a_large_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "predictions.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
    deadline = time.time() + 60
    while not any(p.stat().st_size > 100_000 for p in tmp_path.glob(".predictions.jsonl.*.tmp")):
        assert proc.poll() is None and time.time() < deadline, "the writer ended before it was killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert rows == [{"id": i, "prediction": "old"} for i in range(100)]
    # the killed writer's temp file is hidden and never mistaken for the artifact
    assert all(p.name.startswith(".predictions.jsonl.") for p in tmp_path.iterdir() if p != target)


def test_every_file_of_an_exported_folder_gets_the_same_mode_as_metrics_json(tmp_path):
    # regression: prefix.safetensors came out 0600 (the safetensors writer) beside 0644 artifacts
    from safetensors.torch import save_file

    atomic_write(tmp_path / "metrics.json", lambda tmp: tmp.write_text("{}"))
    os.umask(0o077)  # a private umask at write time must not leak into one file only
    try:
        atomic_replace_dir(tmp_path / "prefix", lambda work: save_file({"w": torch.ones(2)}, str(work / "prefix.safetensors")))
    finally:
        os.umask(artifacts._UMASK)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "prefix" / "prefix.safetensors") == mode(tmp_path / "metrics.json") == 0o666 & ~artifacts._UMASK


def test_temporaries_of_a_killed_save_are_removed_at_the_next_start_and_nothing_else(tmp_path):
    from prefixlab.run.artifacts import remove_stale_temporaries

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("a: 1")
    keep = [run / "metrics.json", run / "checkpoints" / "last.ckpt", run / "prefix" / "prefix_config.json"]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    stale = [run / "checkpoints" / ".last.ckpt.k2j_9xq1.tmp", run / ".metrics.json.a1b2c3d4.tmp"]
    for path in stale:
        path.write_text("half")
    (run / ".prefix.zz91ab_c").mkdir()  # a folder being filled when the process died
    (run / ".prefix.old").mkdir()  # the previous export; prefix/ exists, so it is a leftover too
    removed = remove_stale_temporaries(run)
    assert sorted(removed) == sorted([*stale, run / ".prefix.zz91ab_c", run / ".prefix.old"])
    assert all(p.exists() for p in keep) and (run / ".hydra" / "config.yaml").exists()
    # a crash between the two renames of a folder swap leaves only .trained.old: that copy is kept
    (run / ".trained.old").mkdir()
    assert remove_stale_temporaries(run) == [] and (run / ".trained.old").exists()
