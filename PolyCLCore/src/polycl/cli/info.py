"""``polycl info IMAGE``: geometry, HU statistics and the CT verdict; for a label map, its values,
their names and volumes."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("info", help="print an image's geometry, HU statistics and CT verdict")
    p.add_argument("image", help="NIfTI/NRRD/MHA file or DICOM series folder")
    p.add_argument("--series", default=None, metavar="UID",
                   help="a DICOM folder with several series: the SeriesInstanceUID to read (listed when omitted)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from polycl.io import read_volume
    from polycl.validate import ct_report

    vol = read_volume(args.image, args.series)
    g = vol.geometry
    z, y, x = vol.shape
    print(f"file:        {args.image}")
    print(f"size (x,y,z): {x} x {y} x {z} voxels, {vol.array.dtype}")
    print(f"spacing:     {', '.join(f'{s:.4g}' for s in g.spacing)} mm")
    print(f"origin:      {', '.join(f'{s:.4g}' for s in g.origin)} mm (LPS: x to the left, y to the back, z up)")
    code = g.orientation_code()
    print(f"direction:   {np.round(np.asarray(g.direction).reshape(3, 3), 4).tolist()} "
          f"(index axes i, j, k point to {', '.join(code)})")
    if is_label_map(vol.array):
        print_label_map(vol)
        return 0
    report = ct_report(vol)
    for line in report.lines():
        print(line)
    return 0 if report.is_ct else 1


#: Most distinct values a label map has (TotalSegmentator's 'total' task has 117).
MAX_LABELS = 255


def is_label_map(array) -> bool:
    """An integer image with a few non-negative values (0 = background): a label map, not a CT."""
    import numpy as np

    if not np.issubdtype(array.dtype, np.integer) or array.size == 0 or array.min() < 0:
        return False
    return int(array.max()) <= 65535 and len(np.unique(array[:: max(1, array.shape[0] // 16)])) <= MAX_LABELS + 1


def print_label_map(vol) -> None:
    """One line per label value: its TotalSegmentator name where known, voxels and volume (ml)."""
    from polycl.io import TOTALSEG_NAMES, label_values

    voxel_ml = vol.geometry.voxel_ml
    values = label_values(vol.array)
    print(f"label map:   {len(values)} label value(s) besides 0 (names: TotalSegmentator's where the value is one "
          "of its organs; use them with --label / --labels)")
    for v, n in values.items():
        print(f"  {v:5d}  {TOTALSEG_NAMES.get(v, ''):14s} {n:10d} voxels  {n * voxel_ml:9.1f} ml")
