"""Stage 'segment': the bundled liver model alone (U-Net, no atlas prior) on the fixed CT inputs (load excluded,
model loaded once)."""

from benchmark import Row

from polycl import segment
from polycl.inference import load_model
from polycl.io import read_volume
from stages.load import CASES


def run(ctx):
    model = load_model(None, device=ctx.device)
    rows = []
    for case, rel in CASES.items():
        vol = read_volume(ctx.data / rel)
        _, seconds, gpu = ctx.timed(segment.run, vol, model, segment.SegmentOptions(mode="unet", prior="off"))
        rows.append(Row("segment", case, ctx.device, seconds, n_slices=vol.shape[0], peak_gpu_mb=gpu))
    return rows
