"""A frozen causal LM plus a prefix: training forward and ``generate()``."""

from __future__ import annotations

import torch
from transformers import StoppingCriteriaList

from prefixlab.engine.injection import PrefixActivations
from prefixlab.engine.prefixed_model import USE_ENCODER, PrefixedModel


def positions_after_prefix(attention_mask: torch.Tensor, prefix_lengths: torch.Tensor) -> torch.Tensor:
    """Position ids [batch, seq] for real tokens that follow a prefix of ``prefix_lengths`` [batch] slots.

    Counting only attended tokens makes left padding harmless; starting after the prefix
    is what the original prefix-tuning code and PEFT do (the prefix sits where the first
    positions would be), so a prefix trained there transfers.
    """
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return positions + prefix_lengths.to(positions.device)[:, None]


class PrefixedCausalLM(PrefixedModel):
    """``lm`` (frozen or not, the caller decides) with an optional trainable ``prefix_encoder``
    returning ``PrefixActivations`` (``prefix`` argument: see prefixed_model.py)."""

    MODEL_ATTRIBUTE = "lm"
    # checked by every generate() call besides the caller's own (a training run adds a stop-on-signal one)
    stopping_criteria: tuple = ()

    @staticmethod
    def _unsuitable(adapter, model_type: str) -> str | None:
        if adapter.is_encoder_decoder or adapter.is_encoder_only:  # BART/T5/BERT have adapters too
            return (
                f"model type {model_type!r} is not a decoder-only LM; use PrefixedSeq2SeqLM (encoder-decoder) "
                "or PrefixedEncoder (encoder-only) for it"
            )
        return None

    def _position_ids(self, attention_mask: torch.Tensor, prefix: PrefixActivations | None) -> torch.Tensor:
        batch_size = attention_mask.shape[0]
        if prefix is None or not self.injector.adapter.shift_positions:
            lengths = torch.zeros(batch_size, dtype=torch.long, device=attention_mask.device)
        else:
            lengths = prefix.lengths(batch_size)
        return positions_after_prefix(attention_mask, lengths)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        prefix=USE_ENCODER,
        **lm_kwargs,
    ):
        """input_ids, attention_mask, labels: [batch, seq]. Returns the LM's output (loss, logits)."""
        prefix = self._resolve(prefix)
        with self.injector.activated(prefix):
            return self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=self._position_ids(attention_mask, prefix),
                labels=labels,
                **lm_kwargs,
            )

    def target_loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, prefix=USE_ENCODER
    ) -> torch.Tensor:
        """Mean cross-entropy over the supervised tokens (labels != -100), equal to ``forward(...).loss``.

        For left-padded batches whose supervised tokens are all in the last columns (prompt,
        then target), only those columns go through the LM head: on a 49k vocabulary the
        head and the softmax over every prompt position cost more than the whole prefix
        gradient, and the full [batch, seq, vocab] logits are the largest tensor of a step.
        """
        supervised = (labels != -100).any(dim=0).nonzero()
        first = int(supervised[0]) if len(supervised) else labels.shape[1] - 1
        keep = labels.shape[1] - first + 1  # one more column: the last prompt position predicts the first target
        keep = min(keep, labels.shape[1])
        outputs = self.forward(input_ids, attention_mask, prefix=prefix, logits_to_keep=keep)
        logits = outputs.logits[:, :-1].float()
        targets = labels[:, labels.shape[1] - keep + 1 :]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix=USE_ENCODER, **generate_kwargs):
        """``lm.generate`` with the prefix in every attention call (prompts left-padded)."""
        prefix = self._resolve(prefix)
        if prefix is not None:
            prefix = prefix.detached()  # computed once per call, not per decoding step
        with self.injector.activated(prefix):
            return self.lm.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=self._position_ids(attention_mask, prefix),
                stopping_criteria=StoppingCriteriaList([*(generate_kwargs.pop("stopping_criteria", None) or ()),
                                                        *self.stopping_criteria]),
                **generate_kwargs,
            )
