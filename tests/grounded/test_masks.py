"""Compact masks (supervision's CompactMask) built one frame at a time: exact, small, editable."""

from __future__ import annotations

import numpy as np
import pytest

from grounded.masks import compact_masks, compact_nbytes, replace_mask


@pytest.mark.parametrize(
    ("top", "left", "shape"), [(0, 0, (0, 0)), (95, 143, (1, 1)), (10, 20, (5, 7)), (0, 0, (96, 144))]
)
def test_a_mask_round_trips_exactly_within_its_tight_box(top, left, shape):
    rng = np.random.default_rng(sum(shape))
    mask = np.zeros((96, 144), dtype=bool)
    mask[top : top + shape[0], left : left + shape[1]] = rng.random(shape) > 0.3
    compact = compact_masks([mask], (96, 144))
    np.testing.assert_array_equal(compact[0], mask)
    assert int(compact.area[0]) == int(mask.sum())


def test_compact_masks_are_small_editable_and_built_from_a_generator():
    rng = np.random.default_rng(0)
    dense = np.zeros((4, 30, 40), dtype=bool)
    for i, (y, x) in enumerate([(0, 0), (5, 10), (20, 30), (12, 3)]):
        dense[i, y : y + 8, x : x + 9] = rng.random((8, 9))[: 30 - y, : 40 - x] > 0.5
    compact = compact_masks((m for m in dense), (30, 40))
    assert compact.shape == (4, 30, 40)
    np.testing.assert_array_equal(compact.to_dense(), dense)
    replaced = replace_mask(compact, 1, dense[3])
    np.testing.assert_array_equal(replaced.to_dense(), dense[[0, 3, 2, 3]])
    np.testing.assert_array_equal(compact[1], dense[1])  # the original is unchanged
    with pytest.raises(ValueError, match="out of range"):
        replace_mask(compact, 4, dense[0])
    assert compact_masks([], (30, 40)).shape == (0, 30, 40)
    # a small object in a big frame costs its run-length code, not the frame
    big = np.zeros((2000, 3000), dtype=bool)
    big[100:110, 200:220] = True
    assert compact_nbytes(compact_masks([big], big.shape)) < 200
