"""Per-object propagation on real CT with two kidneys.

Two kidneys are two objects: each gets its own box, stop rule and confidence. A seed slice showing
both propagates both; a seed slice showing one propagates that one and says so. One box around both
kidneys (``split_objects=False``) is measured beside it as the baseline.

The accuracy bar that shows what a user gets is the held-out one: the clinical validation scan
(conftest ``clinical``: 3D-IRCADb-01 patient 1, expert masks, 0.57 x 0.57 x 1.6 mm), two kidneys
seeded from the expert masks on one slice. The other tests run on example_ct (TotalSegmentator labels
2 and 3), the training scan of the kidney U-Net: their bars guard the per-object mechanics (objects,
messages, the one-box baseline, shared embeddings), not generalisation. Thresholds sit just under the
values measured on 2 CPU cores (in the comments and docstrings). The example_ct runs use the slab
that holds the liver and the kidneys (conftest ``abdomen``: slices 58..111, 8 below the lowest kidney
slice) and share one SliceSegmenter with test_propagate_chain.py, so each slice is embedded once for
the whole session; the clinical run shares its SliceSegmenter with the held-out Segment tests of
test_segment.py. The per-object runs and Dice on the abdomen slab are the same as on the whole
volume (0.945, 0.941); only the one-box baseline, which leaked down to slice 36 of the whole volume,
is cut at the slab's edge (0.694 -> 0.744, still far below per-object).
"""

from __future__ import annotations

import numpy as np
import pytest

from clinical_sides import sides
from conftest import dice
from polycl.propagate import PropagateOptions, canonical_slice_index, input_slice_index, run
from polycl.propagate.seeds import canonical_mask


@pytest.fixture(scope="module")
def kidneys(abdomen):
    lab = abdomen[1]
    return (lab == 2).astype(np.uint8), (lab == 3).astype(np.uint8)


@pytest.fixture(scope="module")
def ct(abdomen):
    """The abdomen slab of example_ct (conftest)."""
    return abdomen[0]


@pytest.fixture(scope="module")
def segmenter(abdomen_segmenter):
    return abdomen_segmenter


def _slices(mask, volume) -> np.ndarray:
    return np.flatnonzero(canonical_mask(volume, mask).any(axis=(1, 2)))


def _run(volume, seed, k, segmenter, **kw):
    return run(volume, seed, PropagateOptions(engine="chain", device="cpu", **kw), seed_slices=[k], segmenter=segmenter)


def test_seed_slice_with_both_kidneys_propagates_each_on_its_own(ct, kidneys, segmenter):
    right, left = kidneys
    both = np.intersect1d(_slices(right, ct), _slices(left, ct))
    k = input_slice_index(ct, int(both[len(both) // 2]))
    seed = right | left
    res = _run(ct, seed, k, segmenter)
    assert len(res.objects) == 2 and "2 objects" in res.describe_objects()
    per_object = dice(res.mask, seed)
    assert per_object >= 0.92, per_object  # measured 0.945 (2 CPU cores, LiteMedSAM chain)
    for kidney in (right, left):  # each kidney found over most of its own slices
        found = np.intersect1d(_slices(res.mask * kidney, ct), _slices(kidney, ct))
        assert len(found) >= 0.8 * len(_slices(kidney, ct))
    one_box = _run(ct, seed, k, segmenter, split_objects=False)
    assert len(one_box.objects) == 1
    # one box around both kidneys: measured 0.83 on the slab, per object 0.945
    assert per_object > dice(one_box.mask, seed) + 0.1


def test_seed_slice_with_one_kidney_propagates_that_one_and_says_so(ct, kidneys, segmenter):
    right, left = kidneys
    only_right = np.setdiff1d(_slices(right, ct), _slices(left, ct))
    assert len(only_right) >= 3
    k = input_slice_index(ct, int(only_right[len(only_right) // 2]))
    res = _run(ct, right | left, k, segmenter)
    assert len(res.objects) == 1
    assert "1 object on the seed slice(s): only it was propagated" in res.describe_objects()
    assert dice(res.mask, right) >= 0.92  # measured 0.941
    assert (res.mask & left).sum() < 0.01 * left.sum()  # the other kidney was not seeded, so not found (0)
    assert canonical_slice_index(ct, k) in res.seeds


def test_default_pipeline_segments_both_kidneys_component_by_component(ct, kidneys, segmenter):
    """polycl-kidney's default Segment: one reference slice and one propagation per kidney. Its bar is
    on the training scan (U-Net alone 0.853, pipeline 0.940, 2 CPU cores); the held-out kidney Segment
    bar is in test_segment.py. No slice is
    embedded twice: every embedding computed is of a slice the shared segmenter did not hold yet
    (its cache holds the whole slab), whichever tests ran before."""
    from polycl.segment import SegmentOptions
    from polycl import segment

    right, left = kidneys
    before = segmenter.embeddings_computed
    held = {k for k in range(ct.shape[0]) if segmenter.is_cached(k)}
    result = segment.run(ct, "polycl-kidney", SegmentOptions(engine="chain", device="cpu"),
                         segmenter=segmenter)
    assert result.mode == "pipeline" and result.engine.startswith("chain") and len(result.components) == 2
    for comp, kidney in zip(sorted(result.components, key=lambda c: c.first), (right, left), strict=True):
        lo, hi = _slices(kidney, ct)[[0, -1]]
        assert lo <= comp.seed <= hi and comp.first <= comp.seed <= comp.last  # a seed inside its own kidney
        assert len(comp.candidates) >= 3 and comp.propagated > 0.7 * (hi - lo + 1)
    assert dice(result.mask, right | left) >= 0.92
    new = {k for k in range(ct.shape[0]) if segmenter.is_cached(k)} - held
    assert result.embeddings == segmenter.embeddings_computed - before == len(new)


def test_both_kidneys_of_clinical_scan_propagate_from_one_seed_slice(clinical, clinical_segmenter):
    """Held out: the clinical validation scan's slab, seeded from the expert masks on the middle slice
    that shows both kidneys (the right kidney spans slices 2..48, the left 41..99 of the slab).
    Measured per kidney, each scored on its own side of the body: right 0.970, left 0.977 (2 CPU
    cores, LiteMedSAM chain); bars 0.95, under both by about 0.02 for differences between CPUs and
    SAM encoder engines. The slices between the walked ones are interpolated, the kidneys' tips end
    where the stop rule ends them (right: slices 5..47 of 2..48)."""
    ct, masks = clinical
    right, left = masks["rightkidney"], masks["leftkidney"]
    both = np.intersect1d(_slices(right, ct), _slices(left, ct))
    k = input_slice_index(ct, int(both[len(both) // 2]))
    res = _run(ct, right | left, k, clinical_segmenter)
    assert len(res.objects) == 2 and "2 objects" in res.describe_objects()
    found = sides(res.mask)
    for kidney in ("rightkidney", "leftkidney"):
        d = dice(found[kidney], masks[kidney])
        assert d >= 0.95, (kidney, d)
