"""polycl.masks: components by size, boxes and Dice on small arrays whose answers are known."""

import numpy as np
import pytest

from polycl.errors import InputError
from polycl.masks import (box_region, boxes_overlap, check_box, clip_box, component_boxes, components_by_size, dice,
                          largest_components, mask_box, nonempty_slices)


def _two_blobs():
    m = np.zeros((6, 20, 20), np.uint8)
    m[1:5, 2:8, 2:8] = 1      # 144 voxels
    m[2:4, 12:15, 12:15] = 1  # 18 voxels
    m[5, 19, 19] = 1          # 1 voxel, touches no other (26-connectivity)
    return m


def test_components_by_size_are_largest_first_with_keep_and_fraction():
    m = _two_blobs()
    comps = components_by_size(m)
    assert [int(c.sum()) for c in comps] == [144, 18, 1]
    assert [int(c.sum()) for c in components_by_size(m, keep=2)] == [144, 18]
    assert [int(c.sum()) for c in components_by_size(m, min_fraction=0.1)] == [144, 18]
    assert [int(c.sum()) for c in components_by_size(m, min_size=2)] == [144, 18]
    assert components_by_size(np.zeros((3, 3), bool)) == []
    # diagonal neighbours are one 3D component (26-connectivity) but two with face connectivity
    d = np.zeros((2, 2, 2), bool)
    d[0, 0, 0] = d[1, 1, 1] = True
    assert len(components_by_size(d)) == 1 and len(components_by_size(d, connectivity=1)) == 2


def test_largest_components_keeps_kidney_pairs_but_not_islands():
    m = _two_blobs()
    assert largest_components(m).sum() == 144
    assert largest_components(m, keep=2).sum() == 162
    assert largest_components(m, keep=2, min_fraction=0.2).sum() == 144  # 18 < 0.2 * 144
    assert largest_components(m, keep=3).dtype == np.uint8


def test_boxes_are_inclusive_clipped_and_validated():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True  # rows 2..4, columns 3..8
    assert mask_box(m) == (3.0, 2.0, 8.0, 4.0)
    assert mask_box(m, 4) == (0.0, 0.0, 11.0, 8.0)
    assert mask_box(m, 4, clip=False) == (-1.0, -2.0, 12.0, 8.0)
    comps, skipped = component_boxes(m, 1, 5)
    assert skipped == 0 and comps[0][0] == (2, 1, 9, 5) and comps[0][1].sum() == 18
    b, changed = clip_box((-1, -2, 12, 8), m.shape)
    assert changed and b.tolist() == [0, 0, 11, 8]
    assert check_box((-5, 1, 3.5, 20), m.shape).tolist() == [0, 1, 3.5, 9]
    rows, cols = box_region((2.6, 1.2, 30, 4.4), m.shape)
    assert (rows, cols) == (slice(1, 5), slice(3, 12))
    for bad, why in [((1, 2, 3), "x0, y0"), ((5, 1, 2, 3), "x1 < x0"), ((20, 20, 30, 30), "outside"),
                     ((0, 0, np.nan, 1), "x0, y0")]:
        with pytest.raises(InputError, match=why):
            check_box(bad, m.shape)
    with pytest.raises(InputError, match="empty"):
        mask_box(np.zeros((3, 3), bool))
    other = np.zeros_like(m)
    other[4:8, 8:10] = True
    assert boxes_overlap(m, other)
    far = np.zeros_like(m)
    far[6:9, 0:2] = True
    assert not boxes_overlap(m, far)


def test_dice_2d_3d_and_empty():
    a = np.zeros((4, 4, 4), np.uint8)
    b = np.zeros((4, 4, 4), bool)
    assert dice(a, b) == 1.0
    a[0, :2, :2] = 1  # 4 voxels
    b[0, :2, :] = True  # 8 voxels, 4 shared
    assert dice(a, b) == pytest.approx(2 * 4 / 12)
    assert dice(a[0], b[0]) == pytest.approx(2 * 4 / 12)
    assert dice(a, np.zeros_like(a)) == 0.0
    assert nonempty_slices(a).tolist() == [0]
