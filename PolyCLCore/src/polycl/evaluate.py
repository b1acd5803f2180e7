"""Segmentation metrics in physical units, computed with MONAI.

Dice; Hausdorff distance and its 95th percentile (HD95) in mm using the voxel spacing; volume in
ml and the volume difference. A prediction on another grid than the reference is resampled onto
the reference's grid in physical space (nearest neighbour) first.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from polycl.atomic import atomic_path
from polycl.errors import InputError
from polycl.io import (describe_values, has_image_suffix, label_on_image_grid, label_values, parse_label_spec, read_label,
                       select_labels, strip_image_suffix)


@dataclass
class Scores:
    dice: float
    hausdorff_mm: float
    hd95_mm: float
    pred_ml: float
    ref_ml: float

    @property
    def volume_diff_ml(self) -> float:
        return self.pred_ml - self.ref_ml

    @property
    def volume_diff_pct(self) -> float:
        return 100.0 * self.volume_diff_ml / self.ref_ml if self.ref_ml else float("nan")

    def row(self) -> dict:
        d = asdict(self)
        d.update(volume_diff_ml=self.volume_diff_ml, volume_diff_pct=self.volume_diff_pct)
        return d


def mask_scores(pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, float, float]) -> Scores:
    """Scores of binary (z, y, x) masks on the same grid; distances in mm (nan when a mask is empty)."""
    from monai.metrics import compute_dice, compute_hausdorff_distance

    if pred.shape != ref.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    p = torch.from_numpy(pred > 0)[None, None].float()
    r = torch.from_numpy(ref > 0)[None, None].float()
    dice = float(compute_dice(p, r, include_background=True, ignore_empty=False).item())
    if p.sum() and r.sum():
        with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal deprecated argument
            warnings.simplefilter("ignore", FutureWarning)
            hd = float(compute_hausdorff_distance(p, r, include_background=True, spacing=list(spacing_zyx)).item())
            hd95 = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(spacing_zyx)).item())
    else:
        hd = hd95 = float("nan")
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    return Scores(dice, hd, hd95, float((pred > 0).sum()) * voxel_ml, float((ref > 0).sum()) * voxel_ml)


def evaluate_files(pred_path: str | os.PathLike, ref_path: str | os.PathLike, label: str | int | None = None,
                   pred_label: str | int | None = None) -> Scores:
    """Compare a predicted mask file with a reference label file (``label`` selects reference values;
    a reference holding several labels needs it: one organ is scored, never their union by accident)."""
    ref = read_label(ref_path)
    pred = read_label(pred_path)
    pred = label_on_image_grid(pred, ref)
    if label is None:
        labelled = ref.array[ref.array != 0]
        if labelled.size and labelled.min() != labelled.max():  # several labels (listed only for the error)
            raise InputError(f"{ref_path}: the reference holds several labels: "
                             f"{describe_values(label_values(labelled))}; choose the organ to score with --label "
                             "(a name such as liver, or values such as 5 or 2,3)")
    ref_mask = select_labels(ref.array, label) if label is not None else (ref.array > 0).astype(np.uint8)
    pred_mask = select_labels(pred.array, pred_label) if pred_label is not None else (pred.array > 0).astype(np.uint8)
    if not ref_mask.any():
        raise InputError(f"{ref_path}: the reference has no voxel with label {label} "
                         f"({', '.join(map(str, parse_label_spec(label)))}); it holds "
                         f"{describe_values(label_values(ref.array))}")
    return mask_scores(pred_mask, ref_mask, ref.spacing_zyx)


def evaluate_folders(pred_dir: str | Path, ref_dir: str | Path, out_csv: str | Path, label=None) -> list[dict]:
    """Match image files by case name, score each, write a CSV (atomically) and return the rows. A case
    with a prediction but no reference (or the reverse) gets a row whose ``error`` says so: nothing is
    left out silently."""
    def images(folder):
        return {strip_image_suffix(p.name): p for p in Path(folder).iterdir()
                if p.is_file() and has_image_suffix(p) and not p.name.startswith(".")}

    preds, refs = images(pred_dir), images(ref_dir)
    common = sorted(set(preds) & set(refs))
    if not common:
        raise InputError(f"no case names in common between {pred_dir} ({len(preds)} images) and {ref_dir} "
                         f"({len(refs)} images)")
    rows = []
    for name in sorted(set(preds) | set(refs)):
        if name not in refs:
            rows.append({"case": name, "error": f"not scored: no reference file named {name}.* in {ref_dir}"})
            continue
        if name not in preds:
            rows.append({"case": name, "error": f"not scored: no prediction file named {name}.* in {pred_dir}"})
            continue
        try:
            rows.append({"case": name, **evaluate_files(preds[name], refs[name], label).row(), "error": ""})
        except InputError as exc:
            rows.append({"case": name, "error": str(exc)})
    out = Path(out_csv)
    fields = ["case", "dice", "hausdorff_mm", "hd95_mm", "pred_ml", "ref_ml", "volume_diff_ml", "volume_diff_pct", "error"]
    with atomic_path(out, ".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return rows


def summarise(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if key in r and not math.isnan(r[key])]
    if not values:
        return f"{key}: n/a"
    return f"{key}: mean {np.mean(values):.4f} sd {np.std(values):.4f} (n={len(values)})"



def surface_dice(pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, float, float],
                 tolerance_mm: float = 2.0) -> float:
    """Normalised surface Dice (NSD) of binary (z, y, x) masks at ``tolerance_mm`` (MONAI's
    ``compute_surface_dice``): the fraction of both surfaces lying within the tolerance of the other.
    Computed in the masks' joint box (plus one voxel), so a 512 x 512 CT costs what its organ costs.
    1.0 when both are empty, 0.0 when one is."""
    from monai.metrics import compute_surface_dice

    if pred.shape != ref.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    p, r = pred > 0, ref > 0
    if not p.any() or not r.any():
        return float(p.any() == r.any())
    nz = np.argwhere(p | r)
    lo, hi = np.maximum(nz.min(0) - 1, 0), nz.max(0) + 2
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    pt = torch.from_numpy(np.ascontiguousarray(p[box]))[None, None].float()
    rt = torch.from_numpy(np.ascontiguousarray(r[box]))[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        nsd = compute_surface_dice(pt, rt, class_thresholds=[float(tolerance_mm)], include_background=True,
                                   spacing=list(spacing_zyx))
    return float(nsd.item())
