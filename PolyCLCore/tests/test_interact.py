"""Interactive prompting (polycl.interact) with the real bundled LiteMedSAM on real CT.

Everything runs on a 9-slice slab of example_ct around the liver's largest slice (3 mm slices,
RAS-oriented file: the session's canonical reorientation and index mapping are exercised), with
one SliceSegmenter shared by all sessions so each slice is embedded once (~9 embeddings).
Thresholds (slice Dice >= 0.85 for one include click, 3D Dice >= 0.85 for
propagation from one click); measured 0.93 and 0.9x on this slab.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import dice
from polycl.errors import InputError
from polycl.volume import Volume

HALF = 4  # slab = the liver's largest slice +- HALF slices


@pytest.fixture(scope="module")
def slab(example_ct, example_liver, ts):
    """(CT slab Volume, liver mask, full label map) on the slab's grid; z = slab slice of the liver's largest area."""
    from polycl.io import read_label

    areas = example_liver.array.reshape(example_liver.shape[0], -1).sum(axis=1)
    z = int(np.argmax(areas))
    z0, z1 = max(0, z - HALF), min(example_ct.shape[0], z + HALF + 1)

    def cut(vol):
        return Volume.from_sitk(vol.to_sitk()[:, :, z0:z1])

    labels = read_label(ts / "example_seg_fast_force_split.nii.gz")
    return cut(example_ct), cut(example_liver).array.astype(np.uint8), cut(labels).array, z - z0


@pytest.fixture(scope="module")
def segmenter(slab):
    from polycl.sam import SliceSegmenter

    return SliceSegmenter(slab[0], backend="litemedsam", device="cpu", cache_size=32)


def session(slab, segmenter, mask=None):
    from polycl.interact import InteractiveSession

    return InteractiveSession(slab[0], mask, engine="chain", segmenter=segmenter)


def centre(mask2d):
    edt = ndimage.distance_transform_edt(np.pad(mask2d, 1))[1:-1, 1:-1]
    return np.unravel_index(int(np.argmax(edt)), edt.shape)


def click_and_fill(slab, segmenter):
    """A session after one include click on the largest slice and propagate(): (session, answer, result)."""
    _, liver, _, z = slab
    s = session(slab, segmenter)
    y, x = centre(liver[z])
    first = s.add_point((z, y, x), include=True)
    result = s.propagate()
    return s, first, result


@pytest.fixture(scope="module")
def filled(slab, segmenter):
    """:func:`click_and_fill`, shared by the tests that only read it (a test that corrects makes its own)."""
    return click_and_fill(slab, segmenter)


def test_include_click_gives_the_liver_slice(slab, filled):
    _, liver, _, z = slab
    s, first, _ = filled
    assert first.slice == z and first.changed == [z]
    assert first.mask2d.shape == liver.shape[1:] and first.mask2d.dtype == np.uint8
    assert dice(first.mask2d, liver[z]) >= 0.85
    assert [p.kind for p in s.prompts] == ["include"] and s.prompts[0].slice == z


def test_propagate_from_one_click_fills_the_liver(slab, filled):
    _, liver, _, z = slab
    s, first, result = filled
    assert result.engine == "chain" and result.mode == "fill"
    assert result.mask.shape == liver.shape
    assert dice(result.mask, liver) >= 0.85
    assert s.fixed_slices == [z]
    assert np.array_equal(result.mask[z], first.mask2d)  # the clicked slice stays as answered


def test_correction_changes_a_local_run_and_fixed_slices_stay(slab, segmenter):
    _, liver, _, z = slab
    s, _, _ = click_and_fill(slab, segmenter)  # its own session: the shared one stays as filled
    before = s.mask.copy()
    k = z - 2
    painted = liver[k].copy()
    painted[ndimage.binary_erosion(liver[k], iterations=2) == 0] = 0  # a visibly different correction
    answer = s.correct_slice(k, painted)
    assert answer.changed == [k]
    r = s.propagate()
    try:
        assert r.mode == "local"
        assert np.array_equal(s.mask[k], painted) and np.array_equal(s.mask[z], before[z])
        changed = sorted(np.flatnonzero((s.mask != before).reshape(before.shape[0], -1).any(axis=1)))
        assert changed and set(changed) <= set(range(0, z))  # never past the fixed slice z
        assert changed == list(range(changed[0], changed[-1] + 1))  # one contiguous local run
        assert s.fixed_slices == sorted([k, z])
    finally:
        s.undo()
        s.undo()
    assert np.array_equal(s.mask, before) and s.fixed_slices == [z]


def test_exclude_click_removes_a_leak(slab, segmenter):
    _, liver, labels, z = slab
    leak = (labels[z] == 6) & ndimage.binary_dilation(liver[z], iterations=12)  # the stomach next to it
    assert leak.sum() > 50 and ndimage.label(liver[z] | leak, np.ones((3, 3)))[1] == 1
    start = np.zeros_like(liver)
    start[z] = liver[z] | leak
    s = session(slab, segmenter, start)
    y, x = centre(leak & ~liver[z].astype(bool))
    answer = s.add_point((z, y, x), include=False)
    assert answer.changed == [z]
    left = answer.mask2d.astype(bool)
    assert (left & leak).sum() <= 0.2 * leak.sum()
    assert dice(left, liver[z]) >= 0.9


def test_undo_steps_back_one_prompt(slab, segmenter):
    _, liver, _, z = slab
    s = session(slab, segmenter)
    y, x = centre(liver[z])
    a1 = s.add_point((z, y, x))
    ys, xs = np.nonzero(~liver[z].astype(bool))
    s.add_point((z, ys[0], xs[0]), include=False)
    s.add_box((z, 0, 0), (z, 10, 10))
    assert len(s.prompts) == 3
    s.undo()
    s.undo()
    assert len(s.prompts) == 1 and np.array_equal(s.mask[z], a1.mask2d)
    s.undo()
    assert not s.prompts and not s.mask.any() and s.fixed_slices == []


def test_bad_input_changes_nothing(slab, segmenter):
    from polycl.interact import InteractiveSession

    _, liver, _, z = slab
    s = session(slab, segmenter)
    y, x = centre(liver[z])
    s.add_point((z, y, x))
    state = (s.mask.copy(), list(s.prompts), s.fixed_slices)
    bad = [lambda: s.add_point((z, y, 10_000)),
           lambda: s.add_point((-1, y, x)),
           lambda: s.add_point((z, float("nan"), x)),
           lambda: s.add_point((z, y)),
           lambda: s.add_box((z, 1, 1), (z - 1, 20, 20)),
           lambda: s.add_box((z, 5, 1), (z, 5, 20)),
           lambda: s.correct_slice(z, np.ones((3, 3), np.uint8)),
           lambda: s.correct_slice(999, liver[z]),
           lambda: s.remove_prompt(12345),
           lambda: s.move_prompt(12345, (z, y, x))]
    for call in bad:
        with pytest.raises(InputError):
            call()
        assert np.array_equal(s.mask, state[0]) and s.prompts == state[1] and s.fixed_slices == state[2]
    with pytest.raises(InputError, match="nothing to propagate"):
        session(slab, segmenter).propagate()
    with pytest.raises(InputError):
        InteractiveSession(slab[0], np.zeros((2, 2, 2), np.uint8), segmenter=segmenter)


def test_prompt_move_and_remove_reanswer(slab, segmenter):
    _, liver, _, z = slab
    s = session(slab, segmenter)
    y, x = centre(liver[z])
    a = s.add_point((z, y, x))
    moved = s.move_prompt(a.prompt_id, (z, y + 1, x))
    assert moved.slice == z and dice(moved.mask2d, liver[z]) >= 0.85
    gone = s.remove_prompt(a.prompt_id)
    assert not gone.mask2d.any() and gone.changed == [z] and s.fixed_slices == []


def test_prefetch_embeds_in_the_background_and_stops_when_cancelled(slab, segmenter):
    from polycl.progress import CancelToken

    from polycl.sam import SliceSegmenter

    fresh = SliceSegmenter(slab[0], backend="litemedsam", device="cpu", cache_size=32)  # nothing embedded yet
    s = session(slab, fresh)
    token = CancelToken()
    token.cancel()
    assert s.prefetch(range(slab[0].shape[0]), cancel=token) == 0 and fresh.embeddings_computed == 0
    ks = [s.grid.to_canonical_voxel((z, 0, 0))[0] for z in (0, 1)]
    assert not any(fresh.is_cached(k) for k in ks)
    assert s.prefetch([0, 1, 10_000]) == 2  # a slice outside the volume is skipped
    assert all(fresh.is_cached(k) for k in ks) and fresh.embeddings_computed == 2
    assert s.prefetch([0, 1]) == 0 and fresh.embeddings_computed == 2  # cached slices are not embedded again
    # a cancel while it runs stops it between slices: cancelled after the first new embedding
    embed, token = fresh.precompute, CancelToken()

    def embed_then_cancel(ks):
        embed(ks)
        token.cancel()

    fresh.precompute = embed_then_cancel
    try:
        assert s.prefetch(range(2, slab[0].shape[0]), cancel=token) == 1 and fresh.embeddings_computed == 3
    finally:
        del fresh.precompute
