"""Stage 'pipeline': the three Segment modes on a 512 x 512 x 120 CT, per volume, with the embeddings.

Input: ``example_ct`` (thorax to pelvis, 3 mm) resampled with SimpleITK (linear, air outside) to
512 x 512 x 120 voxels: in-plane 0.715 mm over a 366 mm field of view, 2.8 mm slices - the size of
a typical clinical abdominal CT, with real anatomy. The liver spans about 46 of its slices.
Model: the bundled ``polycl-liver``; SAM: the bundled LiteMedSAM; engine: chain (SAM 2's official
weights were not available where these numbers were measured). Times exclude model loading and include everything
else (U-Net, SAM embeddings, prompts, propagation, fusion). ``embeddings`` counts SAM image
embeddings: at most one per slice in a run.
"""

import numpy as np
import SimpleITK as sitk
from benchmark import Row

from polycl.volume import Geometry, Volume

SIZE, SLICES = 512, 120


def clinical_size_ct(path) -> Volume:
    image = sitk.ReadImage(str(path))
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    extent = size * spacing
    fov = float(max(extent[:2]))
    new_spacing = (fov / SIZE, fov / SIZE, float(extent[2]) / SLICES)
    origin = np.array(image.GetOrigin()) + np.array(image.GetDirection()).reshape(3, 3) @ np.array(
        [-(fov - extent[0]) / 2, -(fov - extent[1]) / 2, 0.0])
    out = sitk.Resample(image, [SIZE, SIZE, SLICES], sitk.Transform(), sitk.sitkLinear, tuple(origin), new_spacing,
                        image.GetDirection(), -1024.0, sitk.sitkInt16)
    return Volume(sitk.GetArrayFromImage(out), Geometry.from_sitk(out), "example_ct at 512x512x120")


def run(ctx):
    from polycl.inference import load_model
    from polycl import segment

    vol = clinical_size_ct(ctx.data / "totalsegmentator" / "example_ct.nii.gz")
    model = load_model("polycl-liver", ctx.device)
    rows = []
    for mode in ("unet", "refine", "pipeline"):
        opts = segment.SegmentOptions(mode=mode, engine="chain", device=ctx.device)
        result, seconds, gpu = ctx.timed(lambda: segment.run(vol, model, opts))
        rows.append(Row("pipeline", f"{mode} 512x512x120", ctx.device, seconds, n_slices=vol.shape[0],
                        peak_gpu_mb=gpu, extra={"embeddings": result.embeddings, "engine": result.engine,
                                                "mask_slices": int(result.mask.any(axis=(1, 2)).sum()),
                                                "stage_s": {k: round(v, 1) for k, v in result.seconds.items()}}))
    return rows
