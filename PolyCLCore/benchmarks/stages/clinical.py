"""Stage 'clinical': clicks and Segment on the clinical validation scan's own geometry.

Input: the validation scan of the shared data folder (3D-IRCADb-01 patient 1, contrast-enhanced,
512 x 512 x 129 at 0.57 x 0.57 x 1.6 mm; evaluation only), with its expert masks. Not resampled:
thin slices are what this stage measures.

Rows, each run twice in the same process, ``walk`` = ``3 mm`` (the chain walks slices ~3 mm apart
and interpolates between them: every 2nd slice here) and ``every slice`` (the walk of every slice,
``polycl.propagate.chain_engine.STEP_MM = 0``), with ``extra.ratio`` = seconds of this row / seconds
of the every-slice row:

* ``first click + fill <organ>``: the simulated user's first click (the centre of the organ's
  largest slice) and the fill, no slice embedded yet (SAM loaded once, as a front end keeps it):
  what a user waits for after the first click on a new CT; ``extra``: SAM embeddings, 3D Dice;
* ``segment liver``: Segment (pipeline mode, bundled ``polycl-liver``, chain engine) of the whole
  scan; ``extra``: embeddings, Dice.
"""

import time

import numpy as np
from benchmark import Row

ORGANS = {"liver": "liver", "kidney_left": "leftkidney", "kidney_right": "rightkidney", "spleen": "spleen"}


def _scan(data):
    from polycl.io import label_on_image_grid, read_label, read_volume

    folder = data / "ircadb" / "patient01"
    vol = read_volume(folder / "ct.nii.gz")
    return vol, {o: label_on_image_grid(read_label(folder / f"{f}.nii.gz"), vol).array > 0 for o, f in ORGANS.items()}


def _first_click(vol, gt, sam):
    from polycl.interact import InteractiveSession
    from polycl.interact.robot import first_clicks
    from polycl.masks import dice
    from polycl.sam import SliceSegmenter

    t0 = time.perf_counter()
    s = InteractiveSession(vol, engine="chain", segmenter=SliceSegmenter(vol, model=sam, cache_size=vol.shape[0]))
    gt_c = s.mask_to_canonical(gt) > 0
    for c in first_clicks(gt_c, s.pixel_mm):
        s.add_point(s.grid.to_input(c), include=True)
    s.propagate()
    return time.perf_counter() - t0, s.segmenter.embeddings_computed, dice(s.canonical_mask, gt_c)


def run(ctx):
    import polycl.propagate.chain_engine as chain
    from polycl import segment
    from polycl.inference import load_model
    from polycl.masks import dice
    from polycl.sam import load_sam

    vol, gts = _scan(ctx.data)
    model = load_model("polycl-liver", ctx.device)
    sam = load_sam("litemedsam", device=ctx.device, download=False)  # loaded once: a front end keeps it
    default_step = chain.STEP_MM
    results = {}
    for walk, step_mm in (("every slice", 0.0), ("3 mm", default_step)):
        chain.STEP_MM = step_mm
        try:
            for organ, gt in gts.items():
                results[(walk, f"first click + fill {organ}")] = _first_click(vol, gt, sam)
            t0 = time.perf_counter()
            r = segment.run(vol, model, segment.SegmentOptions(engine="chain", device=ctx.device))
            results[(walk, "segment liver")] = (time.perf_counter() - t0, r.embeddings, dice(r.mask, gts["liver"]))
        finally:
            chain.STEP_MM = default_step
    rows = []
    for (walk, what), (seconds, embeddings, dice) in results.items():
        base = results[("every slice", what)][0]
        rows.append(Row("clinical", f"ircadb 512x512x129 @1.6 mm: {what} (walk {walk})", ctx.device, seconds,
                        n_slices=vol.shape[0], extra={"embeddings": int(embeddings), "dice": round(float(dice), 3),
                                                      "ratio": round(seconds / base, 2)}))
    return rows
