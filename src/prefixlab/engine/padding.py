"""Token rows of different lengths -> one padded batch and its attention mask.

One helper for every place that builds a batch: the training/evaluation collators, the encoder
collator and mixed-prefix generation. Decoder-only prompts are left-padded so that they end
together (generation appends after the last column); encoder inputs and targets are
right-padded so that positions start at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[len(rows), longest] long ids filled with ``pad_id`` around each row, and the 0/1 mask of
    the real tokens (same shape)."""
    if not rows:
        raise ValueError("pad_rows: no rows to pad")
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[index, span] = torch.as_tensor(row, dtype=torch.long)
        mask[index, span] = 1
    return ids, mask
