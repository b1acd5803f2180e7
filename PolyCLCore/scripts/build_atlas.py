"""Build the bundled atlas ``polycl/data/atlas/`` from the TotalSegmentator example CT (reproducible).

    .venv/bin/python PolyCLCore/scripts/build_atlas.py [--data ../shared/data] [--out PolyCLCore/src/polycl/data/atlas]

Source: ``totalsegmentator/example_ct.nii.gz`` (3 mm, HU) and its class map
``example_seg_fast_force_split.nii.gz`` (TotalSegmentator model outputs, CC BY 4.0; cite Wasserthal
et al., Radiology: AI 2023, doi:10.1148/ryai.230024). What is written (a DERIVED, smaller copy):

* ``atlas_ct.nii.gz``: the CT cropped to the body's bounding box (+ margin), Gaussian-smoothed and
  resampled to :data:`CT_SPACING_MM` (int16 HU): the image registration sees;
* ``atlas_labels.nii.gz``: the organs of :data:`LABELS` only, renumbered 1..n, cropped to their
  bounding box (+ margin) at the source's 3 mm (uint8): what is warped onto a new scan;
* ``atlas.json``: names -> values, the source, the licence and each file's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: Atlas label value -> (name, TotalSegmentator 'total' class id).
LABELS = {1: ("spleen", 1), 2: ("kidney_right", 2), 3: ("kidney_left", 3), 4: ("liver", 5)}
CT_SPACING_MM = 6.0
LABEL_MARGIN_MM = 24.0
BODY_MARGIN_MM = 12.0
SOURCE = ("TotalSegmentator example CT (github wasserth/TotalSegmentator, tests/reference_files/example_ct.nii.gz "
          "and example_seg_fast_force_split.nii.gz); labels are TotalSegmentator model outputs")
LICENCE = "CC BY 4.0; cite Wasserthal et al., Radiology: AI 2023, doi:10.1148/ryai.230024"


def _crop(image: sitk.Image, mask: np.ndarray, margin_mm: float) -> sitk.Image:
    """``image`` cropped to the bounding box of ``mask`` ((z, y, x) on its grid) plus ``margin_mm``."""
    idx = np.argwhere(mask)
    m = [int(np.ceil(margin_mm / s)) for s in image.GetSpacing()[::-1]]
    lo = np.maximum(idx.min(0) - m, 0)
    hi = np.minimum(idx.max(0) + m + 1, mask.shape)
    return image[int(lo[2]):int(hi[2]), int(lo[1]):int(hi[1]), int(lo[0]):int(hi[0])]


def build(data: Path, out: Path) -> dict:
    ct = sitk.ReadImage(str(data / "totalsegmentator" / "example_ct.nii.gz"))
    seg = sitk.ReadImage(str(data / "totalsegmentator" / "example_seg_fast_force_split.nii.gz"))
    seg_a = sitk.GetArrayFromImage(seg)
    ct_a = sitk.GetArrayFromImage(ct)

    labels = np.zeros_like(seg_a, dtype=np.uint8)
    for value, (_, ts_id) in LABELS.items():
        labels[seg_a == ts_id] = value
    lab_img = sitk.GetImageFromArray(labels)
    lab_img.CopyInformation(ct)
    lab_img = _crop(lab_img, labels > 0, LABEL_MARGIN_MM)

    body = sitk.GetImageFromArray((ct_a > -500).astype(np.uint8))
    body.CopyInformation(ct)
    body = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(body), sortByObjectSize=True)) == 1
    small = _crop(sitk.Cast(ct, sitk.sitkFloat32), body, BODY_MARGIN_MM)
    small = sitk.SmoothingRecursiveGaussian(small, CT_SPACING_MM / 2.0)
    size = [round(n * s / CT_SPACING_MM) for n, s in zip(small.GetSize(), small.GetSpacing())]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetOrigin(small.GetOrigin())
    ref.SetDirection(small.GetDirection())
    ref.SetSpacing([CT_SPACING_MM] * 3)
    small = sitk.Resample(small, ref, sitk.Transform(), sitk.sitkLinear, -1024.0)
    small = sitk.Cast(sitk.Round(small), sitk.sitkInt16)

    out.mkdir(parents=True, exist_ok=True)
    meta = {"name": "totalsegmentator-example", "labels": {name: v for v, (name, _) in LABELS.items()},
            "source": SOURCE, "licence": LICENCE, "ct_spacing_mm": CT_SPACING_MM, "files": {}}
    for fname, img in (("atlas_ct.nii.gz", small), ("atlas_labels.nii.gz", lab_img)):
        sitk.WriteImage(img, str(out / fname), useCompression=True)
        meta["files"][fname] = hashlib.sha256((out / fname).read_bytes()).hexdigest()
    (out / "atlas.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=root.parent.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=root / "src" / "polycl" / "data" / "atlas")
    args = parser.parse_args()
    meta = build(args.data, args.out)
    for fname, sha in meta["files"].items():
        print(f"{fname}: {(args.out / fname).stat().st_size} bytes, sha256 {sha}")


if __name__ == "__main__":
    main()
