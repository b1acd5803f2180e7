"""Stage 'segment': the bundled liver model on the fixed CT inputs (load excluded, model loaded once)."""

from benchmark import Row

from polycl.inference import load_model, segment_volume
from polycl.io import read_volume
from stages.load import CASES


def run(ctx):
    model = load_model(None, device=ctx.device)
    rows = []
    for case, rel in CASES.items():
        vol = read_volume(ctx.data / rel)
        _, seconds, gpu = ctx.timed(segment_volume, vol, model)
        rows.append(Row("segment", case, ctx.device, seconds, n_slices=vol.shape[0], peak_gpu_mb=gpu))
    return rows
