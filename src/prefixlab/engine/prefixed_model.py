"""What every prefixed wrapper shares: the injector, the optional trainable prefix encoder,
and the ``prefix`` argument convention of its calls.

``prefix`` on every call: leave it out to use the wrapper's ``prefix_encoder()``, pass
``None`` for the plain model, or pass any ``PrefixActivations`` (an imported prefix, a
subset of the sites, a batch of per-example prefixes).
"""

from __future__ import annotations

from torch import nn

from prefixlab.engine.families import FamilyAdapter, UnsupportedModelError
from prefixlab.engine.injection import PrefixActivations, PrefixInjector

USE_ENCODER = object()  # default of every ``prefix`` argument: the wrapper's own prefix encoder


class PrefixedModel(nn.Module):
    """A Hugging Face model (stored as ``self.<MODEL_ATTRIBUTE>``) with a prefix injector attached.

    Subclasses set ``MODEL_ATTRIBUTE`` and ``_unsuitable`` (why a model family does not fit them).
    """

    MODEL_ATTRIBUTE = "model"
    _USE_ENCODER = USE_ENCODER

    def __init__(self, model: nn.Module, prefix_encoder: nn.Module | None = None) -> None:
        super().__init__()
        setattr(self, self.MODEL_ATTRIBUTE, model)
        self.injector = PrefixInjector(model)
        problem = self._unsuitable(self.injector.adapter, model.config.model_type)
        if problem:
            self.injector.detach()
            raise UnsupportedModelError(problem)
        self.prefix_encoder = prefix_encoder

    @staticmethod
    def _unsuitable(adapter: FamilyAdapter, model_type: str) -> str | None:
        return None

    @property
    def geometry(self):
        return self.injector.geometry

    def _resolve(self, prefix) -> PrefixActivations | None:
        if prefix is USE_ENCODER:
            return None if self.prefix_encoder is None else self.prefix_encoder()
        return prefix
