"""`prefixlab-train --help` (issue 18): every key with its default and its help text, answered
without importing torch or Lightning (before: 12 s, the config imported the methods' torch code)."""

import subprocess
import sys

import pytest

from prefixlab.cli import evaluate, train


def help_text(monkeypatch, capsys, module, app) -> str:
    monkeypatch.setattr(sys, "argv", [app, "--help"])
    module.main()
    return capsys.readouterr().out


def test_help_lists_groups_keys_defaults_and_help_texts(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys, train, "prefixlab-train")
    assert "trainer.max_steps = 80  # optimizer steps (the bounded CPU default)" in text
    assert "trainer.fast_dev_run = false  # " in text and "sweep.fail_on_error = false  # " in text
    assert "  method: " in text and "prefix*" in text  # the group, its options, the default marked
    # the keys a method family adds, under the options that have them
    assert "method.* keys of PrefixOptions (method=embedding, infix, prefix, prefix_flat), besides those:" in text
    assert "  method.prefix_length = 10  # " in text
    assert "  method.lora_r = 8  # LoRA rank" in text


@pytest.mark.parametrize("app", ["train", "evaluate"])
def test_every_key_in_help_has_a_help_text(monkeypatch, capsys, app):
    """A key whose schema field has no ``metadata={"help": ...}`` shows as a bare ``key = value``."""
    module = {"train": train, "evaluate": evaluate}[app]
    text = help_text(monkeypatch, capsys, module, f"prefixlab-{app}")
    keys = [line.strip() for line in text.splitlines() if line.startswith("  ") and " = " in line]
    assert len(keys) > 40
    bare = [line for line in keys if "  # " not in line]
    assert not bare, "schema fields without a help text:\n" + "\n".join(bare)


def test_eval_help_has_the_eval_keys(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys, evaluate, "prefixlab-eval")
    assert "eval.source = null  # a training checkpoint" in text


def test_the_schema_copy_of_the_adapter_child_name_is_the_engines():
    """methods/bottleneck.py writes the engine's CHILD out (importing the engine would import torch with the schema)."""
    from prefixlab.engine.bottleneck_adapters import CHILD
    from prefixlab.methods import bottleneck

    assert bottleneck.CHILD == CHILD


@pytest.mark.cli
def test_the_cli_and_the_config_import_neither_torch_nor_lightning():
    """What `--help` and shell completion load: a fresh interpreter, so nothing else imported torch first."""
    code = ("import sys, prefixlab.cli.train, prefixlab.cli.evaluate, prefixlab.config; "
            "print(sorted(m for m in ('torch', 'pytorch_lightning', 'lightning', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
