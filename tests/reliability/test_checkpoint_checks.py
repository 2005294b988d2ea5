"""A checkpoint to resume from is checked before training: every bad one is one
CheckpointError naming the file and what is wrong, never a torch traceback mid-run."""

import json
import os
import pickle

import pytest
import torch

from prefixlab.training.resume import CheckpointError, check_trainable_state, find_checkpoint, read_checkpoint


class NotData:
    """Pickled into a checkpoint: weights_only loading must refuse to run its code."""


@pytest.fixture(scope="module")
def good(reference_run):
    path = reference_run / "checkpoints" / "last.ckpt"
    return path, torch.load(path, weights_only=True)


def read(path, hp):
    return read_checkpoint(path, hp["model"], hp["method"], hp["task_name"])


@pytest.mark.cli  # reference_run: the real CLI in a subprocess
def test_the_reference_checkpoint_passes(good):
    path, checkpoint = good
    info = read(path, checkpoint["hyper_parameters"])
    assert info["global_step"] == 6 and info["shapes"]


def _with(checkpoint, **changes):
    """A copy of the checkpoint with hyper_parameters changed, e.g. method={"name": "prefix_flat"}."""
    changed = dict(checkpoint, hyper_parameters=json.loads(json.dumps(checkpoint["hyper_parameters"])))
    for group, values in changes.items():
        if isinstance(values, dict):
            changed["hyper_parameters"][group].update(values)
        else:
            changed["hyper_parameters"][group] = values
    return changed


UNREADABLE = {  # file content -> what the message says
    "empty": (lambda raw: b"", "is empty (0 bytes)"),
    "truncated to half": (lambda raw: raw[: len(raw) // 2], "cannot be read"),
    "truncated to 100 bytes": (lambda raw: raw[:100], "cannot be read"),
    "random bytes": (lambda raw: bytes(range(256)) * 40, "cannot be read"),
    "a JSON file": (lambda raw: b'{"state_dict": {}}', "cannot be read"),
    "a pickle with code": (lambda raw: pickle.dumps({"state_dict": NotData()}), "contains pickled code or objects"),
    # torch.load reads a flipped bit in tensor data without complaint: the zip CRCs catch it
    "one flipped byte in the tensor data": (lambda raw: _flip(raw, len(raw) // 2), "fails its checksum"),
    "one flipped byte near the end": (lambda raw: _flip(raw, len(raw) - 2000), "corrupted"),
}


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :]


@pytest.mark.cli  # reference_run: the real CLI in a subprocess
@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_unreadable_checkpoints_are_one_clear_error(tmp_path, good, kind):
    path, checkpoint = good
    make, expected = UNREADABLE[kind]
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(make(path.read_bytes()))
    with pytest.raises(CheckpointError) as info:
        read(bad, checkpoint["hyper_parameters"])
    message = str(info.value)
    assert str(bad) in message and expected in message
    assert "\n" not in message


class Payload:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        import shlex

        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_payload_is_named_as_such_and_never_runs(tmp_path, writer):
    marker = tmp_path / "payload_ran"
    assert os.system("true") == 0  # the shell works here: the payload would run if unpickled
    checkpoint = {"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"x": [Payload(marker)]}, "global_step": 1,
                  "loops": {}, "optimizer_states": []}
    path = tmp_path / "payload.ckpt"
    if writer == "torch.save":
        torch.save(checkpoint, path)
    else:
        path.write_bytes(pickle.dumps(checkpoint, protocol=4))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path, {}, {}, "t")
    message = str(info.value)
    assert not marker.exists(), "the pickled payload ran"
    assert str(path) in message and "\n" not in message
    assert "contains pickled code or objects (posix.system" in message and "refuses to load" in message
    assert "weights_only" in message and "truncated" not in message and "corrupted" not in message


def test_damaged_files_are_not_called_payloads(tmp_path):
    path = tmp_path / "damaged.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    for raw in (path.read_bytes()[:300], bytes(range(256)) * 40, pickle.dumps({"w": [1, 2]})[:-5]):
        path.write_bytes(raw)
        with pytest.raises(CheckpointError, match="truncated or corrupted"):
            read_checkpoint(path, {}, {}, "t")


FOREIGN = {  # what the file holds -> what the message says
    "a bare tensor": (lambda c: torch.zeros(3), "not a prefixlab training checkpoint"),
    "a state_dict only": (lambda c: {"state_dict": c["state_dict"]}, "it lacks hyper_parameters, global_step, loops"),
    "another method": (lambda c: _with(c, method={"name": "prefix_flat"}),
                       "made with method.name='prefix_flat', this run has method.name='prefix'"),
    "another prefix length": (lambda c: _with(c, method={"prefix_length": 9}),
                              "made with method.prefix_length=9, this run has method.prefix_length=4"),
    "another model": (lambda c: _with(c, model={"name_or_path": "gpt2"}), "model.name_or_path='gpt2'"),
    "another model shape": (lambda c: _with(c, model={"config_overrides": {"num_hidden_layers": 3}}), "model.config_overrides="),
    "another task": (lambda c: _with(c, task_name="xsum"), "made for task 'xsum'"),
}


@pytest.mark.cli  # reference_run: the real CLI in a subprocess
@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_checkpoints_of_another_kind_method_model_or_task_are_refused(tmp_path, good, kind):
    path, checkpoint = good
    make, expected = FOREIGN[kind]
    foreign = tmp_path / "foreign.ckpt"
    torch.save(make(checkpoint), foreign)
    with pytest.raises(CheckpointError) as info:
        read(foreign, checkpoint["hyper_parameters"])  # the file was edited; the run keeps the reference's settings
    message = str(info.value)
    assert str(foreign) in message and expected in message, message


@pytest.mark.cli  # reference_run: the real CLI in a subprocess
def test_tensors_of_the_wrong_shape_or_missing_ones_are_named(tmp_path, good):
    from prefixlab.training.lm_module import PrefixTuningModule

    path, checkpoint = good
    module = PrefixTuningModule(**checkpoint["hyper_parameters"])
    shapes = {n: tuple(t.shape) for n, t in checkpoint["state_dict"].items()}
    check_trainable_state(path, shapes, module)  # the real one fits
    name = "prefixed.prefix_encoder.mlps.decoder_self.2.weight"
    with pytest.raises(CheckpointError, match=rf"{name} is \[128, 16\], the model needs \[128, 32\]"):
        check_trainable_state(path, {**shapes, name: (128, 16)}, module)
    with pytest.raises(CheckpointError, match=rf"missing {name}"):
        check_trainable_state(path, {n: s for n, s in shapes.items() if n != name}, module)
    with pytest.raises(CheckpointError, match="unexpected prefixed.lm.model.norm.weight"):
        check_trainable_state(path, {**shapes, "prefixed.lm.model.norm.weight": (64,)}, module)


def test_which_checkpoint_resume_means(tmp_path, capsys):
    assert find_checkpoint(None, tmp_path) is None
    assert find_checkpoint("auto", tmp_path) is None
    assert "resume=auto: no checkpoint at" in capsys.readouterr().out
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert find_checkpoint("auto", tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="no such file"):
        find_checkpoint(str(tmp_path / "missing.ckpt"), tmp_path)
    with pytest.raises(CheckpointError, match="is a folder; give the .ckpt file"):
        find_checkpoint(str(tmp_path / "checkpoints"), tmp_path)
