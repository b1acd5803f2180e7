"""Stage 'registration': the atlas location prior on a 512 x 512 x 120 CT.

Input: ``example_ct`` resampled to 512 x 512 x 120 (:func:`stages.pipeline.clinical_size_ct`, the
pipeline stage's volume). Rows:

* ``register``: the registration to the bundled atlas alone, total and per step (resample, z search,
  affine, B-spline) in ``extra``;
* ``prior kidneys``: registration + warping of both kidneys onto the 512 x 512 x 120 grid, then the
  same again for another organ (the registration comes from :mod:`polycl.atlas.cache`);
* ``segment polycl-kidney``: the whole default Segment of the kidney model (U-Net, atlas prior, SAM
  seed and chained propagation per kidney) and ``segment --target spleen`` (atlas prior -> SAM seed ->
  propagation, no network). The registration cache is emptied before each (and before each repeat
  of the fresh prior), so they include their registration.

Each row's ``extra`` has the 1-minute load average before and after (on a shared machine, say so
with the numbers). NOTE: the bundled atlas is derived from this very scan, so this
times the work; it does not measure accuracy on a new patient.
"""

import os

import SimpleITK as sitk
from benchmark import Row

from stages.pipeline import clinical_size_ct


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def _prior(vol, organs, atlas, fresh: bool):
    from polycl.atlas import cache
    from polycl.atlas.prior import compute_prior

    if fresh:
        cache.clear()
    return compute_prior(vol, organs, atlases=[atlas])


def _segment(vol, model, opts):
    from polycl import segment
    from polycl.atlas import cache

    cache.clear()
    return segment.run(vol, model, opts)


def run(ctx):
    from polycl import segment
    from polycl.atlas.registration import register
    from polycl.atlas.targets import AtlasTarget
    from polycl.atlas.store import bundled_atlas
    from polycl.inference import load_model

    vol = clinical_size_ct(ctx.data / "totalsegmentator" / "example_ct.nii.gz")
    atlas = bundled_atlas()
    n = vol.shape[0]
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()

    def row(case, seconds, load0, device="cpu", gpu=0.0, **extra):
        return Row("registration", case, device, seconds, n_slices=n, peak_gpu_mb=gpu,
                   extra={**extra, "load_1min": [load0, _load()]})

    load0 = _load()
    reg, seconds, _ = ctx.timed(register, vol, atlas.image)
    rows = [row("register 512x512x120", seconds, load0, sitk_threads=threads,
                step_s={k: round(v, 2) for k, v in reg.seconds.items()})]
    for case, organs, fresh in (("prior kidneys 512x512x120", ("kidney_right", "kidney_left"), True),
                                ("prior spleen, cached reg.", ("spleen",), False)):
        load0 = _load()
        prior, seconds, _ = ctx.timed(_prior, vol, organs, atlas, fresh)
        rows.append(row(case, seconds, load0, cached=prior.cached))
    opts = segment.SegmentOptions(engine="chain", device=ctx.device)
    for case, model in (("segment polycl-kidney", load_model("polycl-kidney", ctx.device)),
                        ("segment --target spleen", AtlasTarget("spleen"))):
        load0 = _load()
        result, seconds, gpu = ctx.timed(_segment, vol, model, opts)
        rows.append(row(f"{case} 512x512x120", seconds, load0, ctx.device, gpu, embeddings=result.embeddings,
                        sources=result.sources, stage_s={k: round(v, 1) for k, v in result.seconds.items()},
                        objects=[c.text() for c in result.components]))
    return rows
