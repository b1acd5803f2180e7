"""Stage 'load': read the fixed CT inputs (NIfTI volume, DICOM series) from disk."""

from benchmark import Row

from polycl.io import read_volume

CASES = {"example_ct (NIfTI)": "totalsegmentator/example_ct.nii.gz",
         "example_ct_dicom (DICOM)": "totalsegmentator/example_ct_dicom"}


def run(ctx):
    rows = []
    for case, rel in CASES.items():
        vol, seconds, _ = ctx.timed(read_volume, ctx.data / rel)
        rows.append(Row("load", case, "disk", seconds, n_slices=vol.shape[0]))
    return rows
