"""The LightningModule: a frozen pretrained LM plus a small trainable part.

The trainable part is a prefix (or infix, or input embeddings) for the prefix methods, and
LM weights or PEFT adapters for the baselines (``prefixlab.methods``). Hyperparameters are plain
names and numbers (no modules), so checkpoints stay small and reload cleanly; a
checkpoint holds the trainable parameters and optimizer state, never frozen LM weights.
What it shares with the encoder path (optimizer, NaN guard, eval mode of the LM, checkpoint
state, parameter counts, prefix export) is ``frozen_backbone.FrozenBackboneModule``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prefixlab.engine.export import ExportedPrefix
from prefixlab.engine.prefixed_lm import PrefixedCausalLM
from prefixlab.engine.prefixed_seq2seq import PrefixedSeq2SeqLM
from prefixlab.engine.mixing import with_visibility
from prefixlab.training.frozen_backbone import FrozenBackboneModule, freeze_for_training
from prefixlab.methods import build_prefix_encoder, get_method, is_injected_parameter, unfreeze_for
from prefixlab.training.base_model import record_build, write_base_build
from prefixlab.training.model_loading import load_lm, load_tokenizer
from prefixlab.tasks import build_task


def load_frozen_lm(model: dict):
    """The base LM as every run uses it (``model`` is the model config as a dict)."""
    lm = load_lm(
        model["name_or_path"],
        dtype=model["dtype"],
        attn_implementation=model["attn_implementation"],
        random_init=model["random_init"],
        config_overrides=model["config_overrides"],
        trust_remote_code=bool(model.get("trust_remote_code", False)),  # only the run's own config opts in
    )
    return freeze_for_training(lm, bool(model.get("gradient_checkpointing")))


class PrefixTuningModule(FrozenBackboneModule):
    def __init__(
        self,
        model: dict,
        method: dict,
        optim: dict,
        generation: dict,
        task_name: str,
        eval_zero_shot: bool = True,
        max_steps: int = 1000,
        preloaded: PrefixedCausalLM | None = None,
    ) -> None:
        super().__init__()
        # preloaded: a packed sweep (packed.py) loads the frozen LM once and hands its prefixed
        # wrapper to every job's module; each module puts its own prefix encoder on it.
        self.save_hyperparameters(ignore=["preloaded"])
        lm = load_frozen_lm(model) if preloaded is None else preloaded.lm
        # what the export records to rebuild this LM (a random one: its seed and weights' fingerprint)
        self.base_build = record_build(model, lm)
        self.tokenizer = load_tokenizer(model["name_or_path"], trust_remote_code=bool(model.get("trust_remote_code", False)))
        self.task = build_task(task_name)
        self.method_spec = get_method(method["name"])  # what the method does: prefixlab.methods
        self.is_prefix_method = self.method_spec.is_prefix
        unfreeze_for(method, lm)
        self.is_encoder_decoder = bool(lm.config.is_encoder_decoder)
        if preloaded is None:
            preloaded = (PrefixedSeq2SeqLM if self.is_encoder_decoder else PrefixedCausalLM)(lm, None)
        self.prefixed = preloaded
        if self.is_prefix_method:
            self.prefixed.prefix_encoder = build_prefix_encoder(method, self.prefixed.geometry, lm, self.tokenizer)
        self._outputs: dict[str, list[dict]] = {}
        # stage -> [(example id, prediction)] in dataset order, generated beforehand for this
        # module (a packed sweep generates all its jobs' predictions in mixed-prefix batches:
        # packed_eval.generate_for_all_jobs); empty: evaluation generates batch by batch.
        self.prepared_predictions: dict[str, list[tuple[str, str]]] = {}

    # ---- parameter accounting -------------------------------------------------------------
    def _is_added_to_backbone(self, parameter_name: str) -> bool:
        """A parameter a method injects into the LM (LoRA, (IA)^3, bottleneck adapters): not an LM weight."""
        return is_injected_parameter(parameter_name)

    def _exported_count(self, trainable: int) -> int:
        # the prefix activations for prefix methods; the trained tensors themselves otherwise
        return self._prefix_count() if self.is_prefix_method else trainable

    # ---- training --------------------------------------------------------------------------
    def prefix(self, visible_from: torch.Tensor | None = None):
        """The current prefix (None for methods without one); an infix gets its visibility."""
        encoder = self.prefixed.prefix_encoder
        if encoder is None:
            return None
        activations = encoder()
        if self.method_spec.target_only:  # an infix
            activations = with_visibility(activations, visible_from)
        return activations

    def compute_loss(self, batch: dict) -> torch.Tensor:
        labels = batch["labels"]
        # infix: visible from the last prompt token, the one that predicts the first target token
        first_target = (labels != -100).long().argmax(dim=1)
        prefix = self.prefix(visible_from=first_target - 1)
        if self.is_encoder_decoder:
            return self.prefixed(batch["input_ids"], batch["attention_mask"], labels=labels, prefix=prefix).loss
        return self.prefixed.target_loss(batch["input_ids"], batch["attention_mask"], labels, prefix=prefix)

    # ---- generation and evaluation ---------------------------------------------------------
    def generate_kwargs(self) -> dict:
        """The ``generate()`` arguments of this run's evaluation (``generation.*``), also used by
        the packed sweeps' shared evaluation: pad_token_id is the caller's."""
        gen = self.hparams.generation
        return dict(
            max_new_tokens=gen["max_new_tokens"],
            num_beams=gen["num_beams"],
            length_penalty=gen["length_penalty"],
            no_repeat_ngram_size=gen["no_repeat_ngram_size"],
            do_sample=False,
            eos_token_id=self.tokenizer.eos_token_id,
        )

    def generate_text(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, use_prefix: bool = True) -> list[str]:
        visible_from = torch.full((prompt_ids.shape[0],), prompt_ids.shape[1] - 1, device=prompt_ids.device)
        prefix = self.prefix(visible_from) if use_prefix else None
        output = self.prefixed.generate(
            prompt_ids, prompt_mask, prefix=prefix, pad_token_id=self.tokenizer.pad_token_id, **self.generate_kwargs()
        )
        new_tokens = output if self.is_encoder_decoder else output[:, prompt_ids.shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def _eval_step(self, stage: str, batch: dict) -> None:
        size = batch["input_ids"].shape[0]
        loss = self.compute_loss(batch)
        self.log(f"{stage}/loss", loss, batch_size=size, sync_dist=True)
        predictions = self._prepared(stage, batch["ids"]) or self.generate_text(batch["prompt_ids"], batch["prompt_mask"])
        zero_shot = (
            self.generate_text(batch["prompt_ids"], batch["prompt_mask"], use_prefix=False)
            if stage == "test" and self.hparams.eval_zero_shot and self.is_prefix_method
            else [None] * size
        )
        rows = self._outputs.setdefault(stage, [])
        for i in range(size):
            rows.append(
                {
                    "id": batch["ids"][i],
                    "input": batch["sources"][i],
                    "prediction": predictions[i],
                    "zero_shot_prediction": zero_shot[i],
                    "references": list(batch["references"][i]),
                }
            )

    def _prepared(self, stage: str, ids: list[str]) -> list[str] | None:
        """The next ``len(ids)`` prepared predictions of ``stage``, or None if there are none."""
        prepared = self.prepared_predictions.get(stage)
        if not prepared:
            return None
        taken, self.prepared_predictions[stage] = prepared[: len(ids)], prepared[len(ids) :]
        if [example_id for example_id, _ in taken] != list(ids):  # a different order than the loader's: a bug
            raise RuntimeError(f"prepared {stage} predictions are for examples {[i for i, _ in taken]}, "
                               f"the batch holds {list(ids)}")
        return [prediction for _, prediction in taken]

    def _eval_epoch_end(self, stage: str) -> None:
        rows = self._all_ranks(stage, self._outputs.get(stage, []))
        if not rows:
            return
        references = [tuple(r["references"]) for r in rows]
        scores = self.task.score([r["prediction"] for r in rows], references)
        for name, value in scores.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "rougeL")
        if rows[0]["zero_shot_prediction"] is not None:
            for name, value in self.task.score([r["zero_shot_prediction"] for r in rows], references).items():
                self.log(f"{stage}/zero_shot_{name}", value)
        self.last_predictions = {**getattr(self, "last_predictions", {}), stage: rows}
        self._outputs[stage] = []

    # ---- export ----------------------------------------------------------------------------
    def exported_prefix(self) -> ExportedPrefix:
        placement = "infix" if self.method_spec.target_only else "prefix"
        exported = self._exported_prefix({"task": self.hparams.task_name, "placement": placement})
        exported.base_build = self.base_build
        return exported

    def export(self, directory: Path) -> Path:
        """What a user keeps from the run: the prefix activations for prefix methods, the PEFT
        adapter for lora/ia3, the adapter weights (safetensors + JSON) for adapter, the trained
        weights (safetensors) for fine-tuning: the method's ``export`` (``prefixlab.methods``)."""
        if self.method_spec.export is None:
            raise ValueError(f"method={self.method_spec.name} has no export for an LM run ({self.method_spec.summary})")
        directory = self.method_spec.export(self, Path(directory))
        if not self.method_spec.exports_prefix:  # prefix_config.json holds it; other formats get a file of their own
            write_base_build(directory, self.base_build)
        return directory
