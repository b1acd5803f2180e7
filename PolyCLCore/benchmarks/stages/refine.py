"""Stage 'refine': SAM box refinement with the bundled LiteMedSAM on a fixed input.

Input: example_ct_dicom (20 slices, 512x512) with its liver label resampled in physical space (the
liver is on all 20 slices, one component each). Rows:

* ``embedding``: one slice's image embedding (mean over 5 slices, cache cleared) -> per-slice time;
* ``box``: one box prompt on an embedded slice (mean of 10) -> per-box decoder time;
* ``refine``: whole-volume ``polycl.refine.run`` (fresh embeddings; model loading excluded), both the
  safe refiner (4 candidate boxes per component + guards, the default) and the plain one.

On CUDA, embeddings are computed 8 slices per batch with bf16 autocast of the image encoder
(``SliceSegmenter(amp="auto")``); the mask decoder stays fp32. On the CPU every row is measured
with torch's default thread count and with 1 thread (on a busy machine 1 thread can be faster:
OpenMP threads wait for each other on oversubscribed cores).
"""

import time

import numpy as np
from benchmark import Row

from polycl.io import label_on_image_grid, read_label, read_volume, select_labels


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run(ctx):
    import torch

    if ctx.device != "cpu":
        return _run(ctx, "")
    default = torch.get_num_threads()
    rows = []
    for threads in dict.fromkeys([default, 1]):
        torch.set_num_threads(threads)
        rows += _run(ctx, f" [{threads} thr]")
    torch.set_num_threads(default)
    return rows


def _run(ctx, tag):
    from polycl.sam import SliceSegmenter, load_sam
    from polycl import refine

    ts = ctx.data / "totalsegmentator"
    vol = read_volume(ts / "example_ct_dicom")
    liver = select_labels(label_on_image_grid(read_label(ts / "example_seg_dicom.nii.gz"), vol).array, 5)
    model = load_sam("litemedsam", device=ctx.device, download=False)
    case = "LiteMedSAM dicom liver" + tag
    rows = []

    seg = SliceSegmenter(vol, model=model, cache_size=32)
    seg.set_slice(0)  # warm-up
    times = []
    for k in (3, 7, 11, 15, 19):
        seg.clear_cache()
        _sync(ctx.device)
        t0 = time.perf_counter()
        seg.set_slice(k)
        _sync(ctx.device)
        times.append(time.perf_counter() - t0)
    rows.append(Row("refine", case + " embedding", ctx.device, float(np.mean(times)), n_slices=1, unit="slice",
                    extra={"min_s": round(min(times), 4), "amp_bf16": seg.amp}))

    k = 10
    seg.set_slice(k)
    ys, xs = np.nonzero(liver[k])
    box = (xs.min() - 3, ys.min() - 3, xs.max() + 3, ys.max() + 3)
    seg.predict(box=box)
    times = []
    for _ in range(10):
        _sync(ctx.device)
        t0 = time.perf_counter()
        seg.predict(box=box)
        _sync(ctx.device)
        times.append(time.perf_counter() - t0)
    rows.append(Row("refine", case + " box", ctx.device, float(np.mean(times)), n_slices=1, unit="box",
                    extra={"min_s": round(min(times), 4)}))

    for name, plain in (("safe", False), ("plain", True)):
        def whole():
            s = SliceSegmenter(vol, model=model, cache_size=32)
            return refine.run(vol, liver, refine.RefineOptions(plain=plain), segmenter=s)

        result, seconds, gpu = ctx.timed(whole)
        rows.append(Row("refine", f"{case} volume ({name})", ctx.device, seconds, n_slices=vol.shape[0],
                        peak_gpu_mb=gpu, extra={"components": result.stats.components,
                                                "boxes_per_component": 1 if name == "plain" else "4(+1)"}))
    return rows
