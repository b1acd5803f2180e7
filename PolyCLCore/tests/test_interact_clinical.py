"""A click on an organ of a clinical-resolution CT: the validation scan of the shared data folder
(3D-IRCADb-01 patient 1: contrast-enhanced, 512 x 512 at 0.57 mm, 1.6 mm slices; evaluation only,
read in place, never copied or bundled).

The tests run on a 40-slice crop around the left kidney (slices 60..99 of 129; the kidney spans
41..102), the organ whose first click used to answer with the 24 pixels of renal sinus under it.
The simulated user's first click (the centre of the kidney's largest slice) lands in the sinus
at ~40 HU while the enhanced cortex is ~200 HU: the answer must still be the kidney. Threshold
0.85 3D Dice after one click and the fill (measured: 0.97 on the crop and on the whole scan;
before the click-to-box rework: 0.00). The fill walks every 2nd slice of the 1.6 mm crop, so it
embeds well under the crop's 40 slices (measured 23).
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def kidney_crop(data):
    import SimpleITK as sitk

    from polycl.io import label_on_image_grid, read_label, read_volume
    from polycl.volume import Volume

    folder = data / "ircadb" / "patient01"
    ct = read_volume(folder / "ct.nii.gz")
    gt = label_on_image_grid(read_label(folder / "leftkidney.nii.gz"), ct).array > 0
    z0, z1 = 60, 100
    return Volume.from_sitk(ct.to_sitk()[:, :, z0:z1]), gt[z0:z1].astype(np.uint8)


def test_one_click_in_the_renal_sinus_gives_the_kidney(kidney_crop):
    from polycl.interact import InteractiveSession
    from polycl.interact.robot import first_clicks
    from polycl.masks import dice

    vol, gt = kidney_crop
    session = InteractiveSession(vol, device="cpu", engine="chain")
    gt_c = session.mask_to_canonical(gt) > 0
    (click,) = first_clicks(gt_c, session.pixel_mm)
    assert session.hu[click] < 100  # the click sits in the sinus, not on enhanced parenchyma
    answer = session.add_point(session.grid.to_input(click), include=True)
    k = click[0]
    assert answer.quality >= 0.9
    assert dice(session.canonical_mask[k], gt_c[k]) >= 0.9  # the slice's answer is the kidney
    session.propagate()
    assert dice(session.canonical_mask, gt_c) >= 0.85
    assert session.segmenter.embeddings_computed <= 28  # every 2nd slice of 40, plus the click's and tips


def test_interpolated_slices_between_walked_ones():
    from polycl.propagate.chain_engine import interpolate_masks, slice_step

    yy, xx = np.mgrid[:80, :80]
    a = (yy - 40) ** 2 + (xx - 40) ** 2 <= 10 ** 2
    b = (yy - 40) ** 2 + (xx - 40) ** 2 <= 20 ** 2
    mid = interpolate_masks(a, b, 0.5)
    r = np.sqrt(mid.sum() / np.pi)
    assert 14 <= r <= 16  # halfway between radius 10 and 20
    assert not interpolate_masks(a, np.zeros_like(a), 0.5).any()  # an organ's end is not interpolated
    assert (slice_step(3.0), slice_step(1.6), slice_step(1.0), slice_step(0.625), slice_step(None)) == (1, 2, 3, 5, 1)


def test_a_misplaced_prior_is_drawn_from_the_image(kidney_crop):
    """The atlas prior locates, the image draws: a prior off by 20 mm sideways and 10 mm backwards (a
    registration between patients does no better; the validation scan's right-kidney prior overlaps
    the kidney at Dice 0.32) still gives the kidney, Dice >= 0.85 (measured 0.97, 23 embeddings), from
    clicks inside the prior; the prior alone scores 0.44."""
    from polycl.atlas.delineate import delineate
    from polycl.masks import dice
    from polycl.orientation import orientation
    from polycl.sam import SliceSegmenter

    vol, gt = kidney_crop
    o = orientation(vol)
    hu = o.to_canonical(vol.array).astype(np.float32)
    gt_c = o.to_canonical(gt) > 0
    sx, sy, sz = o.spacing_xyz
    prior = np.roll(gt_c, (int(round(10 / sy)), int(round(20 / sx))), axis=(1, 2))
    assert dice(prior, gt_c) < 0.5
    seg = SliceSegmenter(hu, device="cpu", cache_size=hu.shape[0])
    d = delineate(hu, prior, seg, (sx, sy, sz), "kidney_left")
    assert d.mask is not None, d.note
    assert dice(d.mask, gt_c) >= 0.85


def test_a_corrective_click_answer_is_bounded_by_the_neighbouring_slice(kidney_crop):
    """An include click on an empty slice of a filled segment: SAM's answer may not be much larger than
    the segment on the nearest slice (else a click at an organ's tip could answer with a neighbour).
    With the kidney's own neighbouring slice the kidney is the answer; with a 5 mm speck as the
    neighbour every kidney-sized answer is refused."""
    from polycl.interact.robot import centre
    from polycl.masks import dice
    from polycl.interact.slice_answer import SliceContext, first_answer
    from polycl.orientation import orientation
    from polycl.sam import SliceSegmenter

    vol, gt = kidney_crop
    o = orientation(vol)
    hu = o.to_canonical(vol.array).astype(np.float32)
    gt_c = o.to_canonical(gt) > 0
    sx, sy, _ = o.spacing_xyz
    k = 20
    seg = SliceSegmenter(hu, device="cpu", cache_size=2)
    ctx = SliceContext.of(hu[k], (sy, sx))
    yx = centre(gt_c[k], (sy, sx))
    answer, q = first_answer(seg, k, ctx, yx, neighbour=gt_c[k + 1])
    assert dice(answer, gt_c[k]) >= 0.9 and q >= 0.9
    speck = np.zeros_like(gt_c[k])
    speck[yx[0] - 4:yx[0] + 5, yx[1] - 4:yx[1] + 5] = True
    small, _ = first_answer(seg, k, ctx, yx, neighbour=speck)
    ys, xs = np.nonzero(small)
    assert small.sum() < 0.5 * gt_c[k].sum() and np.ptp(xs) * sx < 1.5 * 9 * sx + 10 + 1


def test_segment_pipeline_interpolates_untrusted_slices_it_stepped_over(kidney_crop):
    """Segment's pipeline on thin slices: a slice the chain stepped over (never embedded) whose
    propagated mask is not trusted is interpolated from its filled neighbours, not refined from the
    U-Net (which would embed it after all). Forced here: the coarse mask is the expert kidney
    dilated by 2 px (a U-Net that is nearly right) and ``min_slice_agreement=1`` rejects every
    propagated slice, so the walked slices take the refined coarse mask and the stepped-over ones
    must be interpolated. Embeddings: the walked slices only (measured 26 of the crop's 40: every 2nd
    slice, the candidates and the single steps at the ends; embedding every fallback slice gives 40);
    3D Dice >= 0.85 (measured 0.95)."""
    from scipy import ndimage

    from polycl.masks import dice
    from polycl.orientation import orientation
    from polycl.progress import Reporter
    from polycl.sam import SliceSegmenter
    from polycl.segment.pipeline import PipelineOptions, run_pipeline

    vol, gt = kidney_crop
    o = orientation(vol)
    hu = o.to_canonical(vol.array)
    gt_c = o.to_canonical(gt) > 0
    coarse = np.stack([ndimage.binary_dilation(s, iterations=2) for s in gt_c]).astype(np.uint8)
    seg = SliceSegmenter(hu, device="cpu")
    opts = PipelineOptions(min_slice_agreement=1.0, min_agreement=0.0)
    out, (report,), engine = run_pipeline(hu, coarse, o.spacing_xyz, seg, Reporter(), opts, engine="chain", device="cpu")
    assert engine.startswith("chain") and report.interpolated >= 10 and report.propagated == 0
    assert seg.embeddings_computed <= 30
    assert dice(out > 0, gt_c) >= 0.85
    assert "interpolated between them" in report.text()
