"""Propagation through the Logic: one annotated slice of a segment becomes a whole segment.

Mechanics use the real SAM 2 (hiera-tiny) architecture with random weights (official weights cannot
be downloaded here) at a small input size, over a 3-slice window: its masks mean nothing, but the
path seed slice -> polycl.propagate -> one segment, undo and provenance are real. The offline
chained-LiteMedSAM engine (always installed with polycl) runs a real-weights accuracy test.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import dice, provenance, slab_node


@pytest.fixture()
def liver_seed(liver_case):
    import slicer

    from PolyCLSegmentLib import segmentedit

    ct, liver, k = liver_case
    seed = np.zeros_like(liver)
    seed[k] = liver[k]
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    sid = segmentedit.applyMask(seg, ct, seed, segmentName="liver")
    return ct, seg, sid, k, seed, liver


def test_propagation_writes_one_segment_from_one_slice(liver_seed, module):
    from polycl.propagate.sam2_weights import build_predictor

    from PolyCLSegmentLib import conversions, segmentedit

    ct, seg, sid, k, seed, _liver = liver_seed
    logic = module.PolyCLSegmentLogic()
    predictor = build_predictor(random_weights=True, image_size=128, device="cpu")
    seen = []
    out = logic.propagate(ct, seg, sid, k, engine="sam2", stopAfter=None, limits=(k - 1, k + 1),
                          predictor=predictor, device="cpu", progress=lambda d, t, m: seen.append((d, t)))
    assert out == sid and seg.GetSegmentation().GetNumberOfSegments() == 1
    result = conversions.segmentArray(seg, sid, ct)
    assert np.array_equal(result[k], seed[k])  # the annotated slice is kept as drawn
    outside = np.ones(result.shape[0], bool)
    outside[k - 1:k + 2] = False
    assert not result[outside].any()  # nothing beyond the limits
    assert seen and seen[-1][0] == 3  # three slices visited
    tags = provenance(seg.GetSegmentation().GetSegment(sid))
    assert tags["PolyCL.Operation"] == "propagate" and tags["PolyCL.PropagationEngine"].startswith("sam2")
    assert '"seedSlice": %d' % k in tags["PolyCL.Prompts"]
    assert tags["PolyCL.Objects"].startswith("1 object on the seed slice(s)")
    assert logic.undo(seg) and np.array_equal(conversions.segmentArray(seg, sid, ct), seed)


def test_propagation_with_offline_engine_follows_the_liver(liver_seed, module):
    from PolyCLSegmentLib import capabilities, conversions

    assert capabilities.propagationEngines()["chain"], capabilities.propagationEngines()["chain"].reason
    ct, seg, sid, k, seed, liver = liver_seed
    logic = module.PolyCLSegmentLogic()
    window = slice(k - 1, k + 2)  # 3 slices keep this test short (LiteMedSAM: ~1 s per slice on 2 cores)
    logic.propagate(ct, seg, sid, k, engine="chain", device="cpu", limits=(k - 1, k + 1))
    result = conversions.segmentArray(seg, sid, ct)
    assert not result[: k - 1].any() and not result[k + 2:].any()
    # 0.8 on slices next to the seed: docs/refinement.md and docs/propagation.md record 0.976 with label boxes and 0.705 for a whole
    # unstopped chain; near the seed the chain has not drifted yet.
    assert dice(result[window], liver[window]) > 0.8


def test_segment_refine_propagate_embed_each_slice_once(liver_case, module):
    """Segment (pipeline), then Refine, then Propagate on one CT share the Logic's SAM embeddings:
    each operation embeds only slices no earlier one embedded, even when the CT is read again into
    a second node (volumes are recognised by content). A slab of 8 slices around the liver's
    largest slice bounds the embeddings (the whole 30-slice CT took ~107 s)."""
    import slicer

    from PolyCLSegmentLib import conversions

    ct_full, liver_full, k_full = liver_case
    k0 = max(0, min(k_full - 4, liver_full.shape[0] - 8))
    ct = slab_node(ct_full, k0, 8, "ct")
    liver, k = liver_full[k0:k0 + 8], k_full - k0
    logic = module.PolyCLSegmentLogic()
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    sid = logic.segment(ct, seg, model="polycl-liver", mode="pipeline", device="cpu", engine="chain")
    twin = slab_node(ct_full, k0, 8, "ct again")
    segmenter = logic.segmenterFor(conversions.volumeFromNode(twin), device="cpu")
    assert len(logic._segmenters) == 1  # the same CT: no second segmenter was made
    first = segmenter.embeddings_computed
    assert first > 0 and first == len(segmenter._cache)  # the pipeline embedded no slice twice

    def new_slices(mask_slices) -> int:
        return len(set(mask_slices) - set(segmenter._cache))

    # canonical index of each node slice: the segmenter works in LPS order (example_ct_sm is LPS already
    # or flipped in z; compare through the segmenter's own conversion)
    def canonical(ks):
        m = np.zeros(ct_shape, np.uint8)
        m[list(ks)] = 1
        return set(np.flatnonzero(segmenter.mask_from_volume(m).any(axis=(1, 2))))

    ct_shape = liver.shape
    segment_slices = np.flatnonzero(conversions.segmentArray(seg, sid, ct).any(axis=(1, 2)))
    expected = new_slices(canonical(segment_slices))
    logic.refine(twin, seg, sid, device="cpu")
    assert segmenter.embeddings_computed == first + expected

    before = segmenter.embeddings_computed
    lo, hi = max(0, k - 3), min(len(liver) - 1, k + 3)
    expected = new_slices(canonical(range(lo, hi + 1)) - canonical([k]))
    logic.propagate(ct, seg, sid, k, engine="chain", stopAfter=None, limits=(lo, hi), device="cpu")
    assert segmenter.embeddings_computed <= before + expected
    assert segmenter.embeddings_computed == len(segmenter._cache)  # still no slice embedded twice
    assert len(segmenter._cache) <= ct_shape[0]
