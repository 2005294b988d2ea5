"""pad_rows: the one padding helper behind the collators and mixed-prefix generation."""

import pytest
import torch

from prefixlab.engine.padding import pad_rows


def test_left_padding_ends_rows_together():
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0, left=True)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_right_padding_starts_rows_together():
    ids, mask = pad_rows([[5], [8, 9]], pad_id=-1, left=False)
    assert ids.tolist() == [[5, -1], [8, 9]]
    assert mask.tolist() == [[1, 0], [1, 1]]


def test_an_empty_row_is_all_padding():
    ids, mask = pad_rows([[], [3, 4]], pad_id=2, left=True)
    assert ids.tolist() == [[2, 2], [3, 4]] and mask.tolist() == [[0, 0], [1, 1]]


def test_no_rows_is_an_error():
    with pytest.raises(ValueError, match="no rows"):
        pad_rows([], pad_id=0, left=True)
