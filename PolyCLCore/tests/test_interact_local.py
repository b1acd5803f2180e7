"""Local re-propagation (polycl.propagate.local) with a scripted step: where it stops, what it keeps."""

from __future__ import annotations

import numpy as np

from polycl.propagate.local import repropagate_locally


def disc(r, shape=(40, 40)):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - 20) ** 2 + (xx - 20) ** 2 <= r * r


def test_walk_stops_where_the_result_agrees_and_keeps_fixed_slices():
    old = np.stack([disc(10)] * 20).astype(np.uint8)
    truth = old.copy()
    truth[8:11] = disc(12)  # the correction on 10 changes slices 8..10 only
    mask = old.copy()
    mask[10] = truth[10]
    calls = []

    def step(j, i, prev):
        calls.append((j, i))
        return truth[j] > 0, 0.9

    written = repropagate_locally(mask, 10, step, fixed={10, 3})
    assert np.array_equal(mask, truth)
    # upwards: 11, 12 agree -> stop; downwards: 9, 8 changed, 7, 6 agree -> stop
    assert sorted(written) == [6, 7, 8, 9, 11, 12]
    assert all(abs(j - i) == 1 for j, i in calls)
    assert np.array_equal(mask[3], old[3])


def test_walk_never_passes_a_fixed_slice():
    old = np.stack([disc(10)] * 12).astype(np.uint8)
    mask = old.copy()
    mask[5] = disc(5)
    written = repropagate_locally(mask, 5, lambda j, i, prev: (disc(5), 1.0), fixed={5, 7, 2})
    assert sorted(written) == [3, 4, 6]
    assert np.array_equal(mask[7], old[7]) and np.array_equal(mask[2], old[2])


def test_a_leak_cut_off_at_the_tail_is_removed_beyond():
    mask = np.zeros((12, 40, 40), np.uint8)
    mask[0:8] = disc(10)        # the organ, slices 0..7 (its bulk)
    mask[8:12] = disc(4)        # a leak it ran into, slices 8..11
    mask[8] = 0                 # the user erased slice 8: the organ ends before it
    written = repropagate_locally(mask, 8, lambda j, i, prev: (np.zeros_like(prev), 0.0), fixed={8})
    assert not mask[8:].any()   # the tail beyond the corrected slice went with it
    assert np.array_equal(mask[0:8], np.stack([disc(10)] * 8))
    assert set(written) == {9, 10, 11}
