"""Stage 'sam_volume': SAM refinement and chain propagation of a clinical-size CT, per volume.

Input: ``example_ct`` resampled to 512 x 512 x 120 (as in the 'pipeline' stage) with its liver label
(TotalSegmentator, label 5) resampled onto that grid (nearest neighbour). Rows, each with eager
torch and with the default CPU encoder engine (``auto``: OpenVINO where installed):

* ``refine``: ``polycl.refine.run`` on the liver label (the safe refiner: guards and widened boxes), so
  every liver slice is embedded once;
* ``propagate``: chain propagation (LiteMedSAM) from the liver's middle slice both ways with the
  default stop rule.

Times exclude model loading and the engine's one-off build (reported by the 'encoder' stage).
``embeddings`` counts SAM image embeddings; Dice is against the resampled label.
"""

from benchmark import Row

from polycl.io import label_on_image_grid, read_label, select_labels


def _dice(a, b) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def run(ctx):
    from stages.pipeline import clinical_size_ct

    from polycl import propagate
    from polycl.propagate import input_slice_index, reference_slice
    from polycl.propagate.seeds import canonical_mask
    from polycl.sam import SliceSegmenter, load_sam
    from polycl import refine as refine_op

    ts = ctx.data / "totalsegmentator"
    vol = clinical_size_ct(ts / "example_ct.nii.gz")
    liver = select_labels(label_on_image_grid(read_label(ts / "example_seg_fast_force_split.nii.gz"), vol).array, 5)
    seed = input_slice_index(vol, reference_slice(canonical_mask(vol, liver)))
    rows = []
    for engine in ("torch", "auto"):
        sam = load_sam("litemedsam", device=ctx.device, download=False, encoder=engine)
        name = sam.encoder.name  # built before timing

        def refine():
            seg = SliceSegmenter(vol, model=sam, cache_size=32)
            return refine_op.run(vol, liver, segmenter=seg), seg.embeddings_computed

        (res, n), seconds, gpu = ctx.timed(refine)
        rows.append(Row("sam_volume", f"refine 512x512x120 [{name}]", ctx.device, seconds, n_slices=vol.shape[0],
                        peak_gpu_mb=gpu, extra={"embeddings": n, "dice": round(_dice(res.mask, liver), 3)}))

        def chain():
            return propagate.run(vol, liver, propagate.PropagateOptions(engine="chain", device=ctx.device),
                                 seed_slices=[seed], segmenter=SliceSegmenter(vol, model=sam, cache_size=32))

        res, seconds, gpu = ctx.timed(chain)
        rows.append(Row("sam_volume", f"propagate 512x512x120 [{name}]", ctx.device, seconds, n_slices=vol.shape[0],
                        peak_gpu_mb=gpu, extra={"embeddings": len(res.visited), "dice": round(_dice(res.mask, liver), 3)}))
    return rows
