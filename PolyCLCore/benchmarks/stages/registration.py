"""Stage 'registration': the atlas location prior (issue 19) on a 512 x 512 x 120 CT.

Input: ``example_ct`` resampled to 512 x 512 x 120 (:func:`stages.pipeline.clinical_size_ct`, the
pipeline stage's volume). Rows: the registration to the bundled atlas alone (resampling, z search,
affine, B-spline), the whole prior (registration + warping of both kidneys onto the 512 x 512 x 120
grid), and the whole Segment of ``--target kidney`` (atlas prior -> SAM seed -> chained propagation,
no U-Net). NOTE: the bundled atlas is derived from this very scan, so this times the work, it does
not measure accuracy on a new patient.
"""

from benchmark import Row

from stages.pipeline import clinical_size_ct


def run(ctx):
    from polycl import segment
    from polycl.atlas.prior import compute_prior
    from polycl.atlas.registration import register
    from polycl.atlas.segment import AtlasTarget
    from polycl.atlas.store import bundled_atlas

    vol = clinical_size_ct(ctx.data / "totalsegmentator" / "example_ct.nii.gz")
    atlas = bundled_atlas()
    reg, seconds, _ = ctx.timed(register, vol, atlas.image)
    rows = [Row("registration", "register 512x512x120", "cpu", seconds, n_slices=vol.shape[0],
                extra={"steps": reg.steps})]
    _, seconds, _ = ctx.timed(compute_prior, vol, ("kidney_right", "kidney_left"), atlases=[atlas])
    rows.append(Row("registration", "prior kidneys 512x512x120", "cpu", seconds, n_slices=vol.shape[0]))
    opts = segment.SegmentOptions(engine="chain", device=ctx.device)
    result, seconds, gpu = ctx.timed(lambda: segment.run(vol, AtlasTarget("kidney"), opts))
    rows.append(Row("registration", "segment --target kidney 512x512x120", ctx.device, seconds, n_slices=vol.shape[0],
                    peak_gpu_mb=gpu, extra={"embeddings": result.embeddings, "sources": result.sources,
                                            "stage_s": {k: round(v, 1) for k, v in result.seconds.items()}}))
    return rows
