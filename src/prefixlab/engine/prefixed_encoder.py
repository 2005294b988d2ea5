"""A frozen encoder-only model (BERT family) plus a prefix: P-tuning v2 (Liu et al., 2022).

The prefix is prepended in every layer's self-attention (site ``encoder_self``); absolute
positions stay as the model computes them, as in P-tuning v2. Only the prefix and the task
head (``trainable_head_parameters``) are meant to train.
"""

from __future__ import annotations

import torch
from torch import nn

from prefixlab.engine.prefixed_model import USE_ENCODER, PrefixedModel

#: Attribute names of the task heads of ``AutoModelForSequenceClassification`` /
#: ``AutoModelForQuestionAnswering`` in the supported families (DistilBERT has two).
HEAD_ATTRIBUTES = ("pre_classifier", "classifier", "qa_outputs")


def trainable_head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the task head: ``classifier`` (and DistilBERT's ``pre_classifier``) for
    sequence classification, ``qa_outputs`` for extractive QA. The pooler, where there is one,
    belongs to the frozen encoder (as in P-tuning v2)."""
    params = [p for name in HEAD_ATTRIBUTES if hasattr(model, name) for p in getattr(model, name).parameters()]
    if not params:
        raise ValueError(
            f"{type(model).__name__} has no task head among {HEAD_ATTRIBUTES}; expected an "
            "AutoModelForSequenceClassification or AutoModelForQuestionAnswering instance"
        )
    return params


class PrefixedEncoder(PrefixedModel):
    """``encoder_model`` (sequence classification or QA) with an optional trainable ``prefix_encoder``
    that returns ``PrefixActivations`` with an ``encoder_self`` site
    (keys/values [layers, 1 or batch, heads, prefix_len, head_dim]).

    ``prefix``: leave it out to use the encoder's, ``None`` for the plain model, or any
    ``PrefixActivations``.
    """

    MODEL_ATTRIBUTE = "model"

    @staticmethod
    def _unsuitable(adapter, model_type: str) -> str | None:
        if not adapter.is_encoder_only:
            return f"PrefixedEncoder needs an encoder-only model; {model_type!r} is not one"
        return None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        prefix=USE_ENCODER,
        **model_kwargs,
    ):
        """input_ids, attention_mask, token_type_ids: [batch, seq].

        Sequence classification: ``labels`` [batch] -> ``loss``, ``logits`` [batch, num_labels].
        QA: ``start_positions``, ``end_positions`` [batch] -> ``loss``, ``start_logits`` and
        ``end_logits`` [batch, seq]. Arguments left as None are not passed to the model.
        """
        optional = dict(
            token_type_ids=token_type_ids, labels=labels, start_positions=start_positions, end_positions=end_positions
        )
        model_kwargs.update({name: value for name, value in optional.items() if value is not None})
        prefix = self._resolve(prefix)
        with self.injector.activated(prefix):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **model_kwargs)
