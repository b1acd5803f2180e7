"""Stage 'encoder': SAM image-embedding time per slice for each encoder engine, side by side.

Input: 5 axial slices of example_ct_dicom (512 x 512, soft-tissue window), LiteMedSAM (bundled).
Engines (polycl.sam.encoder_engines): eager torch (the reference), OpenVINO (fp32), ONNX Runtime,
torch.compile (inductor). Each row gives the mean per-slice time over the 5 slices (one warm-up
slice first, cache cleared between slices), the speed-up over eager torch, the build time (export
or compile on first use, plus the check against eager) and the embedding's relative L2 difference
from eager on the check image. On the CPU every engine runs with torch's thread count.

On CUDA the rows are eager torch in fp32 and with bf16 autocast, batch 1 and batch 8 (slices per
second), and torch.compile; OpenVINO and ONNX Runtime are CPU-only here.
"""

import time

import numpy as np
from benchmark import Row

from polycl.io import read_volume

SLICES = (3, 7, 11, 15, 19)


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _per_slice(seg, device) -> list[float]:
    seg.set_slice(0)  # warm-up (first call of an engine allocates its buffers)
    times = []
    for k in SLICES:
        seg.clear_cache()
        _sync(device)
        t0 = time.perf_counter()
        seg.set_slice(k)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def run(ctx):
    import torch

    from polycl.sam import SliceSegmenter, load_sam

    vol = read_volume(ctx.data / "totalsegmentator" / "example_ct_dicom")
    engines = ["torch", "openvino", "onnxruntime", "compile"] if ctx.device == "cpu" else ["torch", "compile"]
    rows, eager_s = [], None
    for engine in engines:
        t0 = time.perf_counter()
        sam = load_sam("litemedsam", device=ctx.device, download=False, encoder=engine)
        enc = sam.encoder  # builds (exports/compiles and checks) now
        build = time.perf_counter() - t0
        if enc.name != engine:
            rows.append(Row("encoder", f"LiteMedSAM {engine} (unavailable)", ctx.device, float("nan"), 1, "slice",
                            extra={"reason": enc.fallback_reason[:200]}))
            continue
        variants = [(False, 1)]
        if ctx.device == "cuda" and engine == "torch":
            variants = [(False, 1), (True, 1), (True, 8)]
        for amp, batch in variants:
            seg = SliceSegmenter(vol, model=sam, cache_size=32, amp=amp)
            if batch == 1:
                times = _per_slice(seg, ctx.device)
                per_slice = float(np.mean(times))
            else:
                ks = list(range(vol.shape[0]))
                seg.precompute(ks[:batch], batch_size=batch)  # warm-up
                seg.clear_cache()
                _sync(ctx.device)
                t0 = time.perf_counter()
                seg.precompute(ks, batch_size=batch)
                _sync(ctx.device)
                per_slice = (time.perf_counter() - t0) / len(ks)
            if engine == "torch" and not amp:
                eager_s = per_slice
            name = f"LiteMedSAM {engine}" + (" bf16" if amp else "") + (f" batch {batch}" if batch > 1 else "")
            rows.append(Row("encoder", name, ctx.device, per_slice, n_slices=1, unit="slice",
                            extra={"slices_per_s": round(1.0 / per_slice, 2),
                                   "speedup_vs_eager": round(eager_s / per_slice, 2) if eager_s else None,
                                   "build_s": round(build, 1), "relative_error": float(f"{enc.relative_error:.2g}"),
                                   "threads": torch.get_num_threads(), "detail": enc.detail.split(",")[0]}))
    return rows
