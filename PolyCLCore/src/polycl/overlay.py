"""Overlay pictures: CT slices with predicted (and reference) mask outlines, as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polycl.orientation import orientation
from polycl.preprocess import window
from polycl.volume import Volume


def _aspect(sp_rows: float, sp_cols: float) -> float:
    return sp_rows / sp_cols


def save_overlay(volume: Volume, pred: np.ndarray, path: str | Path, ref: np.ndarray | None = None,
                 title: str = "") -> Path:
    """Axial, coronal and sagittal slices through the prediction's centre, in radiological view.

    ``pred`` and ``ref`` are (z, y, x) masks on ``volume``'s grid. Prediction outlined in red,
    reference in green. Aspect ratios follow the voxel spacing (mm).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    o = orientation(volume)  # canonical LPS order (radiological view)
    hu = window(o.to_canonical(volume.array))
    p = o.to_canonical(pred.astype(np.uint8))
    r = o.to_canonical(ref.astype(np.uint8)) if ref is not None else None
    centre_src = p if p.any() else (r if r is not None and r.any() else np.ones_like(p))
    cz, cy, cx = (int(round(v)) for v in np.argwhere(centre_src).mean(0))
    sx, sy, sz = o.spacing_xyz
    views = [
        ("axial", hu[cz], p[cz], None if r is None else r[cz], _aspect(sy, sx), False),
        ("coronal", hu[:, cy, :], p[:, cy, :], None if r is None else r[:, cy, :], _aspect(sz, sx), True),
        ("sagittal", hu[:, :, cx], p[:, :, cx], None if r is None else r[:, :, cx], _aspect(sz, sy), True),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.8))
    for ax, (name, img, pm, rm, aspect, flip) in zip(axes, views):
        if flip:  # superior at the top
            img, pm = img[::-1], pm[::-1]
            rm = None if rm is None else rm[::-1]
        ax.imshow(img, cmap="gray", aspect=aspect, interpolation="nearest")
        if rm is not None and rm.any():
            ax.contour(rm, levels=[0.5], colors="lime", linewidths=1.0)
        if pm.any():
            ax.contour(pm, levels=[0.5], colors="red", linewidths=1.0)
        ax.set_title(name)
        ax.axis("off")
    legend = "red: prediction" + (", green: reference" if ref is not None else "")
    fig.suptitle(f"{title}  ({legend})" if title else legend)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
