"""``polycl info IMAGE``: geometry, HU statistics and the CT verdict."""

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
    report = ct_report(vol)
    print(f"file:        {args.image}")
    print(f"size (x,y,z): {x} x {y} x {z} voxels, {vol.array.dtype}")
    print(f"spacing:     {', '.join(f'{s:.4g}' for s in g.spacing)} mm")
    print(f"origin:      {', '.join(f'{s:.4g}' for s in g.origin)} mm (LPS)")
    print(f"direction:   {np.round(np.asarray(g.direction).reshape(3, 3), 4).tolist()} ({g.orientation_code()})")
    for line in report.lines():
        print(line)
    return 0 if report.is_ct else 1
