"""A frozen encoder-decoder (BART, T5) plus a prefix, as in Li & Liang (2021).

The prefix can feed three attention sites, each with its own activations:

* ``encoder_self``: prepended in every encoder self-attention (changes the encoder states);
* ``decoder_self``: prepended in every decoder self-attention;
* ``cross``: prepended to the encoder states that the decoder attends to, in every layer.

A ``PrefixActivations`` that lacks a site leaves that site plain, so restricting a method to
some sites is building the prefix over ``geometry.restricted_to([...])``.

Positions are left as the model computes them (the adapter's ``shift_positions`` is False):
encoder and cross-attention have no offset to follow, and BART's learned / T5's relative
decoder positions are not moved either. The prefix is prepended at call time in every
attention call, so the cross-attention key/value cache that ``generate()`` fills once holds
only the encoder states and every decoding step sees the prefix again.
"""

from __future__ import annotations

import torch
from transformers import StoppingCriteriaList

from prefixlab.engine.prefixed_model import USE_ENCODER, PrefixedModel


class PrefixedSeq2SeqLM(PrefixedModel):
    """``lm`` (an ``AutoModelForSeq2SeqLM``; frozen or not, the caller decides) with an optional
    trainable ``prefix_encoder`` that returns ``PrefixActivations``.

    Every call takes ``prefix``: leave it out to use the encoder's, pass ``None`` for the plain
    model, or pass any ``PrefixActivations`` (an imported prefix, a subset of the sites, a batch
    of per-example prefixes). Site keys/values: [layers, 1 or batch, kv_heads, prefix_len, head_dim].
    """

    MODEL_ATTRIBUTE = "lm"
    # checked by every generate() call besides the caller's own (a training run adds a stop-on-signal one)
    stopping_criteria: tuple = ()

    @staticmethod
    def _unsuitable(adapter, model_type: str) -> str | None:
        if not adapter.is_encoder_decoder:
            return f"PrefixedSeq2SeqLM needs an encoder-decoder model; {model_type!r} is not one (use PrefixedCausalLM or PrefixedEncoder)"
        return None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        prefix=USE_ENCODER,
        **lm_kwargs,
    ):
        """input_ids, attention_mask: [batch, src_len]; labels / decoder_input_ids: [batch, tgt_len]
        (the model shifts ``labels`` right when ``decoder_input_ids`` is None).

        Returns the model's output: ``loss`` (with labels), ``logits`` [batch, tgt_len, vocab],
        ``encoder_last_hidden_state`` [batch, src_len, d_model].
        """
        prefix = self._resolve(prefix)
        with self.injector.activated(prefix):
            return self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                labels=labels,
                decoder_input_ids=decoder_input_ids,
                **lm_kwargs,
            )

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix=USE_ENCODER, **generate_kwargs):
        """``lm.generate`` with the prefix in every attention call of the encoder pass and of every
        decoding step (beam search included: per-example prefixes follow their expanded rows).
        Returns what ``lm.generate`` returns ([batch * num_return_sequences, tgt_len] token ids)."""
        prefix = self._resolve(prefix)
        if prefix is not None:
            prefix = prefix.detached()  # computed once per call, not per decoding step
        with self.injector.activated(prefix):
            stopping = StoppingCriteriaList([*(generate_kwargs.pop("stopping_criteria", None) or ()), *self.stopping_criteria])
            return self.lm.generate(input_ids=input_ids, attention_mask=attention_mask, stopping_criteria=stopping,
                                    **generate_kwargs)
