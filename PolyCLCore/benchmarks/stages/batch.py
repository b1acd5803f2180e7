"""Stage 'batch': cases per minute of ``polycl segment DIR -o OUT`` in 1 and 2 processes (torchrun).

Input: a folder of 8 cases (symlinks: 4 x example_ct, 122 x 101 x 112, and 4 x example_ct_dicom,
512 x 512 x 20), ``--mode unet`` (the U-Net per case; the SAM modes scale the same way, per case).
Each run is a fresh ``torchrun --standalone --nproc_per_node N`` into an empty output folder; the
time is the whole command, process start and model loading included, as a user would see it. On
the CPU each rank gets cores / N torch threads; on CUDA each rank takes GPU ``LOCAL_RANK``.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark import Row

N_CASES = 8


def run(ctx):
    ts = ctx.data / "totalsegmentator"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in"
        inp.mkdir()
        for i in range(N_CASES // 2):
            (inp / f"ct{i}.nii.gz").symlink_to(ts / "example_ct.nii.gz")
            (inp / f"dicom{i}").symlink_to(ts / "example_ct_dicom", target_is_directory=True)
        for nproc in (1, 2):
            out = Path(tmp) / f"out{nproc}"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                   "-m", "polycl.cli.main", "segment", str(inp), "-o", str(out), "--mode", "unet",
                   "--device", ctx.device]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            seconds = time.perf_counter() - t0
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            rows.append(Row("batch", f"segment unet, {nproc} process(es)", ctx.device, seconds, unit="run",
                            extra={"cases": N_CASES, "cases_per_min": round(60 * N_CASES / seconds, 1)}))
    return rows
