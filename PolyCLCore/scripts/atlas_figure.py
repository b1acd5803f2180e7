"""The picture of docs/evaluation.md "Atlas prior": organs of a patient who is not the atlas, found with no network.

    .venv/bin/python PolyCLCore/scripts/atlas_figure.py -o PolyCLCore/docs/atlas_prior.png

The DICOM series of the shared data (20 slices of upper abdomen, another patient than the bundled
atlas): for the spleen and the liver, ``polycl segment --target ORGAN`` (atlas prior -> SAM seed ->
propagation) and the warped atlas prior alone, against the label (TotalSegmentator outputs). Each panel
is the axial slice where the label is largest, in radiological view (canonical LPS order: anterior up,
the patient's right on the left), titled with the 3D Dice of the prior and of Segment.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

#: The development data folder beside the repository, unless POLYCL_DATA_DIR names another.
os.environ.setdefault("POLYCL_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))

ORGANS = {"spleen": 1, "liver": 5}  # TotalSegmentator ids in example_seg_dicom.nii.gz


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float(np.count_nonzero(a & b)) / max(1, int(a.sum() + b.sum()))


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from polycl.atlas.prior import compute_prior
    from polycl.atlas.targets import AtlasTarget
    from polycl.datasets import data_dir
    from polycl.io import label_on_image_grid, read_label, read_volume
    from polycl.orientation import orientation
    from polycl.preprocess import window
    from polycl.segment import SegmentOptions, run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("atlas_prior.png"))
    args = parser.parse_args()

    ts = data_dir(required=True) / "totalsegmentator"
    ct = read_volume(ts / "example_ct_dicom")
    labels = label_on_image_grid(read_label(ts / "example_seg_dicom.nii.gz"), ct).array
    o = orientation(ct)
    hu = o.to_canonical(ct.array)
    sy, sx = o.spacing_xyz[1], o.spacing_xyz[0]
    fig, axes = plt.subplots(1, len(ORGANS), figsize=(5.5 * len(ORGANS), 5.8))
    for ax, (organ, value) in zip(np.atleast_1d(axes), ORGANS.items()):
        label = labels == value
        prior = compute_prior(ct, (organ,)).mask(organ)  # the registration is cached after the first organ
        result = run(ct, AtlasTarget(organ), SegmentOptions(device="cpu"))
        print(f"{organ}: prior {dice(prior, label):.3f}, Segment {dice(result.mask, label):.3f}; "
              f"{result.report_line()}", flush=True)
        masks = [o.to_canonical(m.astype(np.uint8)) for m in (label, prior, result.mask)]
        k = int(np.argmax(masks[0].sum(axis=(1, 2))))
        ax.imshow(window(hu[k]), cmap="gray", aspect=sy / sx)
        for m, colour in zip(masks, ("lime", "orange", "red")):
            if m[k].any():
                ax.contour(m[k], levels=[0.5], colors=colour, linewidths=1.2)
        ax.set_title(f"{organ}, axial slice {k} of {hu.shape[0]}: prior {dice(prior, label):.2f}, "
                     f"Segment --target {organ} {dice(result.mask, label):.2f} (3D Dice)", fontsize=9)
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, label=t) for c, t in
               (("lime", "label (TotalSegmentator)"), ("orange", "warped atlas prior"),
                ("red", "Segment --target (prior -> SAM -> propagation)"))]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("DICOM series (another patient than the atlas), no network", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=90)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
