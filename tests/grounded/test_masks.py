"""Packed masks: exact round trips, compact sizes, one full frame at a time."""

from __future__ import annotations

import numpy as np
import pytest

from grounded.masks import PackedMask, PackedMasks


@pytest.mark.parametrize(
    ("top", "left", "shape"), [(0, 0, (0, 0)), (95, 143, (1, 1)), (10, 20, (5, 7)), (0, 0, (96, 144))]
)
def test_packed_mask_round_trips(top, left, shape):
    rng = np.random.default_rng(sum(shape))
    mask = np.zeros((96, 144), dtype=bool)
    mask[top : top + shape[0], left : left + shape[1]] = rng.random(shape) > 0.3
    item = PackedMask.from_mask(mask)
    np.testing.assert_array_equal(item.to_dense(96, 144), mask)
    assert item.area == int(mask.sum())
    assert item.nbytes() <= mask.size // 8 + 128  # a bit per pixel of the crop, at most


def test_packed_masks_select_replace_and_iterate():
    rng = np.random.default_rng(0)
    dense = np.zeros((4, 30, 40), dtype=bool)
    for i, (y, x) in enumerate([(0, 0), (5, 10), (20, 30), (12, 3)]):
        dense[i, y : y + 8, x : x + 9] = rng.random((8, 9))[: 30 - y, : 40 - x] > 0.5
    packed = PackedMasks.from_dense(dense)
    assert len(packed) == 4 and (packed.height, packed.width) == (30, 40)
    np.testing.assert_array_equal(packed.to_dense(), dense)
    np.testing.assert_array_equal(np.stack(list(packed)), dense)
    np.testing.assert_array_equal(packed.areas(), dense.sum(axis=(1, 2)))
    np.testing.assert_array_equal(packed.select([2, 0]).to_dense(), dense[[2, 0]])
    replaced = packed.replace(1, dense[3])
    np.testing.assert_array_equal(replaced[1], dense[3])
    np.testing.assert_array_equal(packed[1], dense[1])  # the original is unchanged
    # a small object in a big frame costs its crop, not the frame
    big = np.zeros((2000, 3000), dtype=bool)
    big[100:110, 200:220] = True
    assert PackedMasks.from_dense(big[None]).nbytes() < 300
