"""Stage 'propagate': slices per second of each propagation engine on a fixed input.

Input: example_ct, seed = the liver label's middle slice, limits seed-4..seed+4 and no stop rule,
so every engine propagates into exactly 8 slices (9 with the seed). SAM 2 runs the real SAM 2.1
hiera-tiny architecture at its real input size (1024) with RANDOM weights: the time per frame is
the same as with the official weights (same operations, same shapes), the masks are meaningless.
On CUDA the SAM 2 engine runs under bf16 autocast. Model loading is excluded from the times.
"""

from benchmark import Row

from polycl.io import read_label, read_volume, select_labels
from polycl import propagate
from polycl.propagate import input_slice_index, reference_slice
from polycl.propagate.seeds import canonical_mask

HALF = 4


def run(ctx):
    import torch

    from polycl.propagate.sam2_weights import build_predictor
    from polycl.sam import SliceSegmenter, load_sam

    vol = read_volume(ctx.data / "totalsegmentator/example_ct.nii.gz")
    lab = read_label(ctx.data / "totalsegmentator/example_seg_fast_force_split.nii.gz")
    liver = select_labels(lab.array, 5)
    k = input_slice_index(vol, reference_slice(canonical_mask(vol, liver)))
    limits = dict(start=k - HALF, end=k + HALF, stop_after=None, device=ctx.device)
    rows = []

    torch.manual_seed(0)
    predictor = build_predictor(random_weights=True, device=ctx.device)  # hiera-tiny at 1024
    options = propagate.PropagateOptions(engine="sam2", **limits)
    _, seconds, gpu = ctx.timed(lambda: propagate.run(vol, liver, options, seed_slices=[k], predictor=predictor))
    n = 2 * HALF + 1
    rows.append(Row("propagate", "sam2.1 tiny (random w.) example_ct", ctx.device, seconds, n_slices=n,
                    peak_gpu_mb=gpu, extra={"slices_per_s": round(n / seconds, 3), "image_size": predictor.image_size,
                                            "bf16": ctx.device == "cuda"}))
    del predictor

    refiner = load_sam("litemedsam", device=ctx.device, download=False)
    options = propagate.PropagateOptions(engine="chain", **limits)
    _, seconds, gpu = ctx.timed(lambda: propagate.run(vol, liver, options, seed_slices=[k],
                                                      segmenter=SliceSegmenter(vol, model=refiner, cache_size=32)))
    rows.append(Row("propagate", "chain LiteMedSAM example_ct", ctx.device, seconds, n_slices=n, peak_gpu_mb=gpu,
                    extra={"slices_per_s": round(n / seconds, 3)}))
    return rows
