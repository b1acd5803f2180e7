"""Where real data is: the folder named by ``POLYCL_DATA_DIR`` (nothing is guessed: a user's data
comes from a command's argument or that variable; the repository's scripts and tests set it to
their development data folder).

On a user's machine the demo CT is downloaded from its public source with a SHA-256 check
(:func:`demo_ct`); tests never download.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from polycl.errors import InputError

def data_dir(required: bool = False) -> Path | None:
    """The folder ``POLYCL_DATA_DIR`` names, or None when it is unset or missing (InputError when
    ``required``)."""
    env = os.environ.get("POLYCL_DATA_DIR")
    if env and Path(env).expanduser().is_dir():
        return Path(env).expanduser().resolve()
    if required:
        raise InputError(f"real CT data not found: set POLYCL_DATA_DIR to the data folder"
                         f"{f' ({env} is not a folder)' if env else ''}")
    return None


@dataclass(frozen=True)
class LabelledScan:
    """A labelled CT of the shared data: ``image`` (file or DICOM folder), ``label`` file, label values."""

    name: str
    image: Path
    label: Path
    values: tuple[int, ...]
    note: str = ""


def labelled_scans(target: str, root: str | Path | None = None) -> list[LabelledScan]:
    """Every independent labelled scan of ``target`` ('liver' or 'kidney') in the shared data.

    ``example_ct_sm`` and its label files are left out: they are 30 slices of ``example_ct``, not
    another scan. The kidneys are labelled in ``example_ct`` only.
    """
    d = Path(root) if root is not None else data_dir(required=True)
    ts = d / "totalsegmentator"
    if target == "liver":
        return [
            LabelledScan("example_ct", ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz", (5,),
                         "TotalSegmentator example, 3 mm; label = TotalSegmentator output"),
            LabelledScan("example_ct_dicom", ts / "example_ct_dicom", ts / "example_seg_dicom.nii.gz", (5,),
                         "20-slice DICOM series, 0.98 x 0.98 x 2 mm; label = TotalSegmentator output (y-flipped grid)"),
            LabelledScan("dcmqi_ct_3slice", d / "dcmqi" / "ct-3slice", d / "dcmqi" / "liver_seg.nrrd", (1,),
                         "3-slice GE CT, 0.81 mm; coarse hand-made liver mask"),
        ]
    if target == "kidney":
        return [LabelledScan("example_ct", ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz", (2, 3),
                             "both kidneys; label = TotalSegmentator output")]
    raise InputError(f"no shared labelled scans for target '{target}' (liver or kidney)")
