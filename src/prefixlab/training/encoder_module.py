"""The encoder path: a frozen BERT-family encoder, a task head, and (optionally) a P-tuning v2 prefix.

``method=prefix`` / ``prefix_flat``: the prefix (MLP-reparameterized or flat, as for LMs) and the
head train; ``method=head``: the head alone, the encoder counterpart of the zero-shot baseline.
Heads: ``AutoModelForSequenceClassification``'s classifier over the task's ``labels`` (on the
frozen pooler, as in P-tuning v2) or ``AutoModelForQuestionAnswering``'s start/end span head.

Export (``export``), one folder a user keeps and ``load_encoder_export`` reads back:
* ``head.safetensors``: the head's tensors under their names in the task model
  (``classifier.weight``/``.bias``; ``qa_outputs.weight``/``.bias``), float32;
* ``head_config.json``: format ``prefixlab-encoder-head`` version 1, base model, model class,
  kind (classification | extractive), labels (index i = logit i), task, method, max answer tokens;
* prefix methods also ``prefix.safetensors`` + ``prefix_config.json`` (``engine/export.py``: site
  ``encoder_self``, [layers, heads, prefix_len, head_dim]); ``load_prefix`` reads them as for LMs.
A prefix is trained with its head: it is of no use without ``head.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from prefixlab.run.artifacts import atomic_replace_dir
from prefixlab.data.encoder_data import CLASSIFICATION, EncoderDataModule, best_span, span_text
from prefixlab.engine.export import PrefixFormatError, load_prefix, save_prefix
from prefixlab.engine.families import adapter_for_model_type
from prefixlab.engine.prefixed_encoder import PrefixedEncoder, trainable_head_parameters
from prefixlab.training.frozen_backbone import FrozenBackboneModule, freeze_for_training
from prefixlab.methods import build_prefix_encoder, get_method
from prefixlab.training.model_loading import ModelNotFoundError, load_config, resolve
from prefixlab.tasks.scoring import classification, squad
from prefixlab.tasks import task_options

HEAD_FORMAT, HEAD_FORMAT_VERSION = "prefixlab-encoder-head", 1
HEAD_WEIGHTS, HEAD_CONFIG = "head.safetensors", "head_config.json"
MAX_ANSWER_TOKENS = 30  # the usual SQuAD decoding limit (Hugging Face's run_qa default)


def is_encoder_model(model_config) -> bool:
    return adapter_for_model_type(model_config.model_type).is_encoder_only


def load_encoder(model: dict, kind: str, labels: list[str] | None = None):
    """The encoder with a classification or span head (head newly initialized from the global RNG)."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    trust_remote_code = bool(model.get("trust_remote_code", False))  # only a run's own config opts in
    config = load_config(model["name_or_path"], trust_remote_code=trust_remote_code)
    for key, value in (model.get("config_overrides") or {}).items():
        if not hasattr(config, key):
            raise ValueError(f"model.config_overrides: {config.model_type} config has no field {key!r}")
        setattr(config, key, value)
    if kind == CLASSIFICATION:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    auto_class = AutoModelForSequenceClassification if kind == CLASSIFICATION else AutoModelForQuestionAnswering
    dtype = getattr(torch, model.get("dtype", "float32"))
    if model.get("random_init"):
        config._attn_implementation = model.get("attn_implementation", "sdpa")
        return auto_class.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: classifier": expected, the head is what trains
    try:
        loaded, info = auto_class.from_pretrained(resolve(model["name_or_path"]), config=config, dtype=dtype,
                                                  attn_implementation=model.get("attn_implementation", "sdpa"),
                                                  output_loading_info=True, trust_remote_code=trust_remote_code)
    finally:
        hf_logging.set_verbosity(verbosity)
    # a frozen weight left at its random init would never be fixed by training: only the head may be new
    missing = sorted(set(info["missing_keys"]) - set(head_parameter_names(loaded)))
    if missing:
        raise ModelNotFoundError(
            f"model.name_or_path={model['name_or_path']!r}: the checkpoint lacks encoder weights "
            f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); they would stay random and frozen"
        )
    return loaded


def head_parameter_names(model: torch.nn.Module) -> list[str]:
    head = {id(p) for p in trainable_head_parameters(model)}
    return [name for name, p in model.named_parameters() if id(p) in head]


class EncoderTaskModule(FrozenBackboneModule):
    """Hyperparameters are names and numbers (``model``, ``method``, ``task_name`` as in the LM
    module, so ``resume.read_checkpoint`` checks them the same way). The backbone is the encoder
    with its head; the head trains, so checkpoints keep it (``FrozenBackboneModule.state_dict``)."""

    def __init__(
        self, model: dict, method: dict, optim: dict, task_name: str, kind: str, labels: list[str] | None = None,
        max_steps: int = 1000, max_answer_tokens: int = MAX_ANSWER_TOKENS,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        encoder = freeze_for_training(load_encoder(model, kind, labels), bool(model.get("gradient_checkpointing")))
        from prefixlab.training.base_model import record_build

        self.base_build = record_build(model, encoder)  # with the head as drawn: a rebuild draws it again
        encoder.requires_grad_(False)
        for p in trainable_head_parameters(encoder):
            p.requires_grad_(True)
        self.prefixed = PrefixedEncoder(encoder)
        self.is_prefix_method = get_method(method["name"]).is_prefix
        if self.is_prefix_method:
            self.prefixed.prefix_encoder = build_prefix_encoder(method, self.prefixed.geometry, encoder, None)
        self._head_names = frozenset(head_parameter_names(encoder))
        self._rows: dict[str, list[dict]] = {}
        self.last_predictions: dict[str, list[dict]] = {}

    # ---- accounting ----------------------------------------------------------------------------
    def _is_added_to_backbone(self, parameter_name: str) -> bool:
        return parameter_name in self._head_names  # the head is no encoder weight: it trains

    def _head_count(self) -> int:
        return sum(p.numel() for p in trainable_head_parameters(self.prefixed.model))

    def _exported_count(self, trainable: int) -> int:
        return self._prefix_count() + self._head_count()

    def parameter_counts(self) -> dict[str, Any]:
        """The base's counts ("lm_params": the frozen encoder, the LM path's key for one report
        format) with the head's size."""
        counts = super().parameter_counts()
        return {"lm_params": counts.pop("lm_params"), "head_params": self._head_count(), **counts}

    # ---- steps ---------------------------------------------------------------------------------
    def forward(self, batch: dict):
        """Classification: logits [batch, labels]; extractive: start_logits, end_logits [batch, seq]."""
        return self.prefixed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def compute_loss(self, batch: dict) -> torch.Tensor:
        return self._loss(batch, self(batch))

    def _loss(self, batch: dict, out) -> torch.Tensor | None:
        if self.hparams.kind == CLASSIFICATION:
            return F.cross_entropy(out.logits, batch["labels"])
        has = batch["has_span"]  # examples whose answer truncation cut off have no loss
        if not has.any():
            return None
        # softmax over context tokens only, as decoding chooses: padding and question are no candidates,
        # so an example's loss does not depend on how much padding its batch has
        outside = ~batch["context_mask"][has]
        start = F.cross_entropy(out.start_logits[has].masked_fill(outside, float("-inf")), batch["start_positions"][has])
        end = F.cross_entropy(out.end_logits[has].masked_fill(outside, float("-inf")), batch["end_positions"][has])
        return (start + end) / 2

    # ---- evaluation ----------------------------------------------------------------------------
    def predict_text(self, batch: dict, out) -> list[str]:
        if self.hparams.kind == CLASSIFICATION:
            return [self.hparams.labels[i] for i in out.logits.argmax(dim=-1).tolist()]
        starts, ends = best_span(out.start_logits, out.end_logits, batch["context_mask"], self.hparams.max_answer_tokens)
        return [span_text(c, o, s, e) for c, o, s, e in zip(batch["contexts"], batch["offsets"], starts.tolist(), ends.tolist())]

    def _eval_step(self, stage: str, batch: dict) -> None:
        out = self(batch)
        loss = self._loss(batch, out)
        if loss is not None:
            self.log(f"{stage}/loss", loss, batch_size=batch["input_ids"].shape[0])
        rows = self._rows.setdefault(stage, [])
        for i, prediction in enumerate(self.predict_text(batch, out)):
            rows.append({"id": batch["ids"][i], "input": batch["sources"][i], "prediction": prediction,
                         "references": list(batch["references"][i])})

    def score(self, rows: list[dict]) -> dict[str, float]:
        predictions, references = [r["prediction"] for r in rows], [tuple(r["references"]) for r in rows]
        if self.hparams.kind == CLASSIFICATION:
            return classification(predictions, references, tuple(self.hparams.labels))
        return squad(predictions, references)

    def _eval_epoch_end(self, stage: str) -> None:
        rows = self._all_ranks(stage, self._rows.pop(stage, []))
        if rows:
            for name, value in self.score(rows).items():
                self.log(f"{stage}/{name}", value)
            self.last_predictions[stage] = rows

    # ---- export --------------------------------------------------------------------------------
    @torch.no_grad()
    def export(self, directory: Path) -> Path:
        """Head (and prefix activations, for prefix methods) into ``directory``, atomically."""
        from safetensors.torch import save_file

        hp = self.hparams
        model = self.prefixed.model
        names = head_parameter_names(model)
        params = dict(model.named_parameters())
        head = {name: params[name].detach().float().cpu().contiguous() for name in names}
        config = {
            "format": HEAD_FORMAT, "format_version": HEAD_FORMAT_VERSION, "base_model": hp.model["name_or_path"],
            "model_class": type(model).__name__, "kind": hp.kind, "labels": list(hp.labels) if hp.labels else None,
            "task": hp.task_name, "method": hp.method["name"], "max_answer_tokens": hp.max_answer_tokens,
            "tensors": names, "base_model_build": self.base_build.to_dict(),
        }
        exported = self._exported_prefix({"task": hp.task_name, "head": HEAD_WEIGHTS}) if self.is_prefix_method else None
        if exported is not None:
            exported.base_build = self.base_build

        def fill(work: Path) -> None:
            if exported is not None:
                staged = save_prefix(work / "prefix", exported)  # the LM path's format, files moved up
                for path in staged.iterdir():
                    path.rename(work / path.name)
                staged.rmdir()
            save_file(head, str(work / HEAD_WEIGHTS))
            (work / HEAD_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

        return atomic_replace_dir(Path(directory), fill)


def read_head_config(directory: Path) -> dict:
    path = Path(directory) / HEAD_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PrefixFormatError(f"{directory} is not an encoder export: {HEAD_CONFIG} unreadable ({error})") from error
    if config.get("format") != HEAD_FORMAT or config.get("format_version") != HEAD_FORMAT_VERSION:
        raise PrefixFormatError(f"{path}: format {config.get('format')!r} version {config.get('format_version')!r}, "
                                f"expected {HEAD_FORMAT} version {HEAD_FORMAT_VERSION}")
    return config


def attach_export(model: torch.nn.Module, directory: Path):
    """Load an export's head into ``model`` (a task model of the export's class) and return its
    prefix (``PrefixActivations``, or None for method=head) to pass as ``PrefixedEncoder(..., prefix=)``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_head_config(directory)
    if type(model).__name__ != config["model_class"]:
        raise PrefixFormatError(f"{directory} holds a head for {config['model_class']}, not {type(model).__name__}")
    tensors = load_file(str(directory / HEAD_WEIGHTS))
    params = dict(model.named_parameters())
    for name in config["tensors"]:
        if name not in params or name not in tensors or params[name].shape != tensors[name].shape:
            raise PrefixFormatError(f"{directory / HEAD_WEIGHTS}: head tensor {name!r} missing or of another shape than the model's")
        with torch.no_grad():
            params[name].copy_(tensors[name])
    if not (directory / "prefix_config.json").is_file():
        return None
    geometry = adapter_for_model_type(model.config.model_type).geometry(model)
    return load_prefix(directory, expected_geometry=geometry.restricted_to(["encoder_self"])).activations


def load_encoder_export(directory: Path, model: dict | None = None):
    """(PrefixedEncoder with the export's head, its prefix or None, tokenizer, head config) for an exported
    run: ``wrapped(**tokenizer(...), prefix=prefix)``.
    ``model``: the model section to load (default: the export's base model, float32)."""
    from prefixlab.training.model_loading import load_tokenizer

    from prefixlab.training.base_model import model_section, read_base_build, rebuild_under_seed

    config = read_head_config(directory)
    build = read_base_build(directory) if model is None else None
    if build is not None:  # the recorded base (random weights: drawn again from their seed, checked)
        model = model_section(build)
        encoder = rebuild_under_seed(build, lambda: load_encoder(model, config["kind"], config["labels"])).eval()
    else:
        # only the base model's name is read from the export: an export folder never opts in to remote code
        model = model or {"name_or_path": config["base_model"], "trust_remote_code": False}
        encoder = load_encoder(model, config["kind"], config["labels"]).eval()
    prefix = attach_export(encoder, directory)
    tokenizer = load_tokenizer(model["name_or_path"], trust_remote_code=bool(model.get("trust_remote_code", False)))
    return PrefixedEncoder(encoder).eval(), prefix, tokenizer, config


def build_encoder_run(settings, resolved: dict) -> tuple[EncoderDataModule, EncoderTaskModule]:
    """The encoder counterparts of the LM path's datamodule and module; the data is loaded (and
    checked) before the encoder, so a bad task or dataset fails before any weights load."""
    task = settings.task
    datamodule = EncoderDataModule(
        task.name, settings.model.name_or_path, task.max_source_tokens, task.train_size, task.val_size, task.test_size,
        task.subset_seed, task.batch_size, task.eval_batch_size, seed=settings.seed, task_options=task_options(task),
        trust_remote_code=settings.model.trust_remote_code,
    )
    datamodule.setup("fit")
    module = EncoderTaskModule(
        model=resolved["model"], method=resolved["method"], optim=resolved["optim"], task_name=task.name,
        kind=datamodule.kind, labels=list(datamodule.labels) if datamodule.labels else None,
        max_steps=settings.trainer.max_steps,
    )
    return datamodule, module
