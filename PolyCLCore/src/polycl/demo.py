"""The README's demo: segment a real CT with the bundled liver model, write the mask and an
overlay PNG, and print the Dice against the reference label.

Data: ``POLYCL_DATA_DIR`` (default ``../shared/data``). On a machine without it, the
TotalSegmentator example CT and its label are downloaded from the TotalSegmentator repository
(Apache-2.0 code, CC BY 4.0 data; Wasserthal et al. 2023) with SHA-256 checks into the cache.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from polycl.datasets import data_dir
from polycl.home import polycl_home

_BASE = "https://github.com/wasserth/TotalSegmentator/raw/master/tests/reference_files/"
DEMO_FILES = {
    "example_ct.nii.gz": "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1",
    "example_seg_fast_force_split.nii.gz": "e8097758e56e73099075b6caaebce23ef11bc6fad66a4ec3753b9406846558c7",
}


def demo_inputs(base_url: str | None = None) -> tuple[Path, Path]:
    """(CT, label) paths: from the shared data when present, else downloaded and checked.

    ``base_url`` (or the ``POLYCL_DEMO_BASE_URL`` environment variable) replaces the public address,
    e.g. for a mirror or the test suite's server on 127.0.0.1."""
    d = data_dir()
    if d is not None and (d / "totalsegmentator" / "example_ct.nii.gz").is_file():
        ts = d / "totalsegmentator"
        return ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz"
    from polycl.download import download
    from polycl.progress import terminal

    base = base_url or os.environ.get("POLYCL_DEMO_BASE_URL") or _BASE
    cache = polycl_home() / "demo"
    paths = []
    for name, sha in DEMO_FILES.items():
        with terminal(name, unit="B") as bar:
            paths.append(download(base.rstrip("/") + "/" + name, sha256=sha, dest_dir=cache, progress=bar))
    return paths[0], paths[1]


def run_demo(out_dir: str | Path = "demo-output", model: str | None = None, device: str = "auto",
             mode: str | None = None) -> float:
    """Segment the example CT in ``mode`` (default: :data:`polycl.segment.DEFAULT_MODE`); returns the Dice."""
    from polycl.evaluate import mask_scores
    from polycl.inference import load_model
    from polycl.segment import DEFAULT_MODE, SegmentOptions
    from polycl.segment import run as segment
    from polycl.io import read_label, read_volume, select_labels, write_mask_like
    from polycl.overlay import save_overlay
    from polycl.progress import terminal

    out = Path(out_dir)
    ct_path, label_path = demo_inputs()
    t0 = time.perf_counter()
    volume = read_volume(ct_path)
    loaded = load_model(model, device)
    t1 = time.perf_counter()
    options = SegmentOptions(mode=mode or DEFAULT_MODE, device=device)
    with terminal(f"segment ({options.mode})", percent=True) as bar:
        result = segment(volume, loaded, options, progress=bar)
    mask = result.mask
    t2 = time.perf_counter()
    mask_path = write_mask_like(mask, volume, out / "example_ct_liver.nii.gz")
    reference = select_labels(read_label(label_path).array, loaded.target)
    scores = mask_scores(mask, reference, volume.spacing_zyx)
    png = save_overlay(volume, mask, out / "example_ct_liver_overlay.png", ref=reference,
                       title=f"{loaded.entry.name} on example_ct: Dice {scores.dice:.3f}")
    print(f"input:    {ct_path} ({volume.shape[2]}x{volume.shape[1]}x{volume.shape[0]} voxels)")
    print(f"model:    {loaded.entry.name} ({loaded.target}) on {loaded.device}; load {t1 - t0:.1f} s, segment {t2 - t1:.1f} s")
    print(f"how:      {result.summary()}")
    print(f"mask:     {mask_path} ({scores.pred_ml:.0f} ml)")
    print(f"overlay:  {png}")
    print(f"Dice against the TotalSegmentator {loaded.target} label: {scores.dice:.3f} (HD95 {scores.hd95_mm:.1f} mm)")
    return scores.dice
