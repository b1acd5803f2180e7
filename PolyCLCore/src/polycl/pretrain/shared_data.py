"""The project's shared real CT (``POLYCL_DATA_DIR``, see ../shared/data/README.md) as pre-training scans.

All CT volumes are used once: ``example_ct_sm`` is left out because it is a sub-volume of
``example_ct`` (it would count those slices twice) and the MR volume because it is not CT.
Liver labels (TotalSegmentator label 5, model outputs) exist for ``example_ct``
(``example_seg_fast_force_split``) and the DICOM series (``example_seg_dicom``, which is on a
y-flipped grid and is resampled onto the image in physical space when loaded); the other scans
are unlabelled (their liver presence is unknown).
"""

from __future__ import annotations

from pathlib import Path

from polycl.pretrain.dataset import Scan

LIVER = (5,)


def shared_scans(data_dir: str | Path, *, exclude: tuple[str, ...] = (), labelled_only: bool = False) -> list[Scan]:
    d = Path(data_dir)
    ts = d / "totalsegmentator"
    scans = [
        Scan("example_ct", ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz", LIVER),
        Scan("example_ct_dicom", ts / "example_ct_dicom", ts / "example_seg_dicom.nii.gz", LIVER),
        Scan("aorta_ct_cropped", ts / "aorta_ct_cropped.nii.gz"),
        Scan("pulmonary_ct_cropped", ts / "pulmonary_ct_cropped.nii.gz"),
        Scan("deeplesion_000015", d / "deeplesion" / "000015_01_01_103-115.nii.gz"),
        Scan("dcmqi_ct_3slice", d / "dcmqi" / "ct-3slice"),
    ]
    return [s for s in scans if s.name not in exclude and (s.label is not None or not labelled_only)]
