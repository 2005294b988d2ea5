"""Real-word initialization (Li & Liang, section 7.2): the prefix starts as the LM's own
key/value activations of real words, e.g. "summarize" or "table-to-text:".

The activations are read from the model's cache after it has read the words at positions
0..P-1 (keys already rotated, as a cache holds them). Real tokens are placed at positions
after the prefix, so a prefix initialized this way makes the model compute exactly what it
computes with the words typed in front of the input: training starts from a text prompt.

Two ways to lay the words out (``method.init_fill``) and two ways to make the MLP form output them
(``method.init_fit``):

* fill ``phrase_length`` (the original code): the phrase once, after a leading space (" summarize", as
  it reads inside a sentence), and the prefix is exactly as long as its tokens; ``repeat``: the phrase
  without the space, repeated or cut to any prefix length ("summarizesummarize...").
* fit ``mse`` (the original code): Adam on the mean squared error between the MLP's output and the
  activations, for some steps before training (only the MLP moves, not its input table); ``exact``:
  the last Linear solved by least squares, so the output equals the activations from the first step.
"""

from __future__ import annotations

import torch
from torch import nn

from prefixlab.engine.injection import PrefixActivations, SitePrefix
from prefixlab.engine.parameterization import FlatPrefix, MLPPrefix, site_prefix_to_rows


FILLS = ("phrase_length", "repeat")
FITS = ("mse", "exact")


def phrase_token_ids(tokenizer, text: str) -> list[int]:
    """The phrase's token ids as the original code reads it: once, after a leading space."""
    phrase = text if text.startswith(" ") else " " + text
    ids = tokenizer(phrase, add_special_tokens=False)["input_ids"]
    if not ids or not text.strip():
        raise ValueError(f"method.init_text={text!r} has no tokens; give some words, e.g. 'summarize'")
    return ids


def init_token_ids(tokenizer, text: str, prefix_length: int, fill: str = "repeat") -> list[int]:
    """The words' token ids for a prefix of ``prefix_length`` positions.

    fill "repeat": the words (no leading space) repeated or cut to ``prefix_length``.
    fill "phrase_length": ``phrase_token_ids``; the caller makes ``prefix_length`` equal their
    count (``PhraseLengthError`` otherwise: a prefix of another length would not be the phrase).
    """
    if fill == "phrase_length":
        ids = phrase_token_ids(tokenizer, text)
        if len(ids) != prefix_length:
            raise PhraseLengthError(text, ids, prefix_length)
        return ids
    if fill != "repeat":
        raise ValueError(f"method.init_fill={fill!r}: expected one of {', '.join(FILLS)}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"method.init_text={text!r} has no tokens; give some words, e.g. 'summarize'")
    return (ids * (prefix_length // len(ids) + 1))[:prefix_length]


class PhraseLengthError(ValueError):
    """method.init_fill=phrase_length: the prefix length is not the phrase's token count."""

    def __init__(self, text: str, ids: list[int], prefix_length: int) -> None:
        self.count = len(ids)
        super().__init__(
            f"method.prefix_length={prefix_length} does not fit method.init_text={text!r}: with "
            f"method.init_fill=phrase_length the prefix is the phrase itself, {len(ids)} tokens with its leading "
            f"space for this tokenizer; set method.prefix_length={len(ids)} (or method.init_fill=repeat)")


@torch.no_grad()
def word_activations(lm: nn.Module, token_ids: list[int]) -> PrefixActivations:
    """Decoder self-attention keys/values of ``token_ids`` read at positions 0..P-1:
    [layers, 1, kv_heads, P, head_dim] each."""
    ids = torch.tensor([token_ids], device=lm.device)
    cache = lm(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).past_key_values
    keys = torch.stack([layer.keys for layer in cache.layers])
    values = torch.stack([layer.values for layer in cache.layers])
    return PrefixActivations({"decoder_self": SitePrefix(keys=keys.float(), values=values.float())})


def fit_mlp_output(mlp: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, fit: str = "exact",
                   steps: int = 500, lr: float = 1e-4) -> float:
    """Make ``mlp(inputs)`` [P, out] approach ``targets`` [P, out]; returns the final mean squared error.

    fit "exact": the last Linear solved by least squares on the hidden features of ``inputs``
    (exact when its width >= P). fit "mse": ``steps`` Adam steps at ``lr`` on the MSE, every
    parameter of ``mlp`` moving (the original code fits its MLP, ``control_trans``, this way;
    ``inputs``, its table, stays). Dropout is off while fitting (``mlp`` is put back in its mode).
    """
    inputs, targets = inputs.detach(), targets.detach().to(inputs.dtype)
    if fit == "exact":
        with torch.no_grad():
            hidden = mlp[:-1](inputs)  # [P, mid_dim]
            features = torch.cat([hidden, torch.ones_like(hidden[:, :1])], dim=1).double()
            solution = torch.linalg.lstsq(features, targets.double(), driver="gelsd").solution  # [mid+1, out]
            last = mlp[-1]
            last.weight.copy_(solution[:-1].T.to(last.weight.dtype))
            last.bias.copy_(solution[-1].to(last.bias.dtype))
    elif fit == "mse":
        if steps < 0 or not lr > 0:
            raise ValueError(f"an MSE fit needs steps >= 0 and lr > 0 (got {steps}, {lr})")
        training = mlp.training
        mlp.eval()
        parameters = [p for p in mlp.parameters()]
        flags = [p.requires_grad for p in parameters]
        with torch.enable_grad():
            for p in parameters:
                p.requires_grad_(True)
            optimizer = torch.optim.Adam(parameters, lr=lr)
            for _ in range(steps):
                loss = nn.functional.mse_loss(mlp(inputs), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        for p, flag in zip(parameters, flags):
            p.requires_grad_(flag)
            p.grad = None
        mlp.train(training)
    else:
        raise ValueError(f"method.init_fit={fit!r}: expected one of {', '.join(FITS)}")
    with torch.no_grad():
        return nn.functional.mse_loss(mlp(inputs), targets).item()


def initialize_from_activations(prefix_encoder: nn.Module, activations: PrefixActivations, fit: str = "exact",
                                steps: int = 500, lr: float = 1e-4) -> dict[str, float]:
    """Make ``prefix_encoder()`` output ``activations`` (per site present in both); returns each
    site's mean squared error from them after fitting.

    Flat: copy. MLP: ``fit_mlp_output`` on the embedding table's rows ("exact": the last Linear by
    least squares, mid_dim >= prefix length makes it exact; "mse": the original code's Adam fit).
    """
    errors = {}
    for site, prefix in activations.sites.items():
        rows = site_prefix_to_rows(prefix.keys[:, 0], prefix.values[:, 0])  # [P, values_per_token]
        if isinstance(prefix_encoder, FlatPrefix):
            with torch.no_grad():
                prefix_encoder.rows[site].copy_(rows.to(prefix_encoder.rows[site].dtype))
            errors[site] = 0.0
        elif isinstance(prefix_encoder, MLPPrefix):
            errors[site] = fit_mlp_output(prefix_encoder.mlps[site], prefix_encoder.embeddings[site].weight, rows,
                                          fit=fit, steps=steps, lr=lr)
        else:
            raise TypeError(f"cannot initialize a {type(prefix_encoder).__name__} from activations")
    return errors
