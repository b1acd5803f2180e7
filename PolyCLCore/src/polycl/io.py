"""Reading and writing CT volumes and label maps with SimpleITK.

Formats: anything SimpleITK reads from one file (NIfTI ``.nii``/``.nii.gz``, NRRD, MHA/MHD) and
DICOM series given as a folder. Writes are atomic: the file appears complete or not at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import SimpleITK as sitk

from polycl.atomic import atomic_path
from polycl.errors import GeometryError, InputError
from polycl.volume import Volume

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: TotalSegmentator 'total' class ids of the organs this package knows by name (its default label map).
TOTALSEG_LABELS: dict[str, int] = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5}
#: The same map the other way round: label value -> organ name.
TOTALSEG_NAMES: dict[int, str] = {v: k for k, v in TOTALSEG_LABELS.items()}
#: The same ids per target we ship models for ("kidney": both kidneys).
TARGET_LABELS: dict[str, tuple[int, ...]] = {"liver": (5,), "kidney": (2, 3), "spleen": (1,)}


def label_values(array: np.ndarray) -> dict[int, int]:
    """{label value: voxel count} of the nonzero values of a label map."""
    values, counts = np.unique(array[array != 0], return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def describe_values(values) -> str:
    """'1 (spleen), 2 (kidney_right), 7' for label values, TotalSegmentator names where known (at most 12)."""
    values = sorted(values)
    text = ", ".join(f"{v} ({TOTALSEG_NAMES[v]})" if v in TOTALSEG_NAMES else str(v) for v in values[:12])
    return text + (f", ... ({len(values)} values)" if len(values) > 12 else "") if values else "none (all 0)"


def has_image_suffix(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def strip_image_suffix(name: str) -> str:
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


#: Files looked at to decide whether a folder holds DICOM (the 128-byte preamble + "DICM").
DICOM_PROBE_FILES = 50


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file carries the DICOM Part 10 preamble ("DICM" at byte 128), whatever its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_folder(folder: str | os.PathLike) -> bool:
    """A folder holds a DICOM series when its files are DICOM by content (not by name: exports
    often name files by UID or number, with no extension). Files with the preamble are looked for
    among the first :data:`DICOM_PROBE_FILES`; a folder without image files whose files lack it
    (old ACR-NEMA style) is asked of GDCM."""
    p = Path(folder)
    if not p.is_dir():
        return False
    files = []
    for entry in sorted(p.iterdir()):
        if entry.is_file() and not entry.name.startswith("."):
            files.append(entry)
            if len(files) >= DICOM_PROBE_FILES:
                break
    if any(is_dicom_file(f) for f in files):
        return True
    if not files or any(has_image_suffix(f) for f in files):
        return False
    return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p)))


def dicom_series(folder: str | os.PathLike) -> list[dict]:
    """The DICOM series in ``folder`` as GDCM finds them: [{"uid", "files", "paths", "description",
    "modality"}], ``paths`` in GDCM's slice order (what :class:`sitk.ImageSeriesReader` reads)."""
    out = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        info = {"uid": uid, "files": len(names), "paths": names, "description": "", "modality": ""}
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(names[0])
            reader.ReadImageInformation()
            for key, tag in (("description", "0008|103e"), ("modality", "0008|0060")):
                if reader.HasMetaDataKey(tag):
                    info[key] = reader.GetMetaData(tag).strip()
        except RuntimeError:
            pass
        out.append(info)
    return out


def _describe_series(series: list[dict]) -> str:
    return "\n".join(f"  --series {s['uid']}  ({s['files']} files{', ' + s['modality'] if s['modality'] else ''}"
                     f"{', ' + repr(s['description']) if s['description'] else ''})" for s in series)


def _read_dicom_series(folder: Path, series: str | None = None) -> sitk.Image:
    found = dicom_series(folder)
    if not found:
        raise InputError(f"{folder}: folder holds no DICOM series (and no single image file was given)")
    if series is not None:
        chosen = [s for s in found if s["uid"] == series]
        if not chosen:
            raise InputError(f"{folder}: no DICOM series with UID {series}; the folder holds:\n"
                             + _describe_series(found))
    elif len(found) > 1:
        raise InputError(f"{folder}: folder holds {len(found)} DICOM series; they are never merged. Pick one:\n"
                         + _describe_series(found))
    else:
        chosen = found
    paths = chosen[0]["paths"]  # already sorted by GDCM: no second scan of the folder
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(paths)
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's header comes with its pixels: one pass
    image = reader.Execute()
    check_slice_positions(folder, paths, reader.GetMetaData)
    return image


#: A gap between two neighbouring DICOM slices larger than this many times the series' usual
#: spacing means slices are missing (or unreadable, so GDCM left them out).
MAX_GAP_RATIO = 1.5


def check_slice_positions(folder: Path, paths, header) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced along the slice normal: ITK would
    make one volume of it with an averaged spacing, so every distance and volume would be wrong.
    Positions come from each file's Image Position (Patient) (0020,0032) projected on the normal of
    its Image Orientation (Patient) (0020,0037); files without them are left to ITK. ``header(i, tag)``:
    the tag's value in file ``paths[i]`` (``sitk.ImageSeriesReader.GetMetaData`` after a read with
    ``MetaDataDictionaryArrayUpdateOn``), raising RuntimeError when it is missing."""
    if len(paths) < 3:
        return
    positions = []
    normal = None
    for i in range(len(paths)):
        try:
            ipp = [float(v) for v in header(i, "0020|0032").split("\\")]
            if normal is None:
                iop = [float(v) for v in header(i, "0020|0037").split("\\")]
                normal = np.cross(iop[:3], iop[3:])
        except (RuntimeError, ValueError):
            return
        positions.append(float(np.dot(ipp, normal)))
    order = np.argsort(positions)
    z = np.asarray(positions)[order]
    gaps = np.diff(z)
    usual = float(np.median(gaps))
    if usual <= 0:
        dup = int(order[int(np.argmin(gaps)) + 1])
        raise InputError(f"{folder}: two slices of the series share one position (e.g. {Path(paths[dup]).name}); "
                         "it holds duplicates or several acquisitions. Export one series with distinct slices")
    worst = int(np.argmax(gaps))
    if gaps[worst] > MAX_GAP_RATIO * usual:
        a, b = Path(paths[order[worst]]).name, Path(paths[order[worst + 1]]).name
        missing = int(round(gaps[worst] / usual)) - 1
        raise InputError(
            f"{folder}: the series has a gap: {gaps[worst]:.2f} mm between slices {a} and {b} (at "
            f"{z[worst]:.1f} and {z[worst + 1]:.1f} mm) where the others are {usual:.2f} mm apart; about "
            f"{missing} slice(s) are missing or unreadable. A volume read across the gap would have a wrong "
            "spacing: export the whole series again")


def _nifti_expected_bytes(head: bytes) -> int | None:
    """Header size + voxel data bytes a NIfTI-1/2 header promises (None when ``head`` is no NIfTI header)."""
    import struct

    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            dims = struct.unpack(endian + "8q", head[16:80])
            offset = int(struct.unpack(endian + "q", head[168:176])[0])
            break
    else:
        return None
    n = int(np.prod([max(1, int(d)) for d in dims[1:1 + max(0, min(7, int(dims[0])))]], dtype=np.int64))
    return max(offset, 348) + n * max(1, bitpix) // 8


def _gzip_isize(path: Path) -> int:
    """The uncompressed size (mod 2**32) a gzip file's trailer records: its last 4 bytes (RFC 1952)."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def check_complete_nifti(path: Path) -> None:
    """Refuse a NIfTI file that ends before its voxel data does (a cut download or copy) or whose gzip
    stream is broken: ITK would read the missing part as zeros without a word. A ``.nii.gz`` whose gzip
    trailer records exactly the size the header promises is complete (a cut file ends in compressed
    data, not in that trailer); any other is decompressed to the end to find out."""
    import gzip
    import zlib

    gz = str(path).lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(540)
            expected = _nifti_expected_bytes(head)
            if expected is None:
                return  # not a NIfTI header: ITK's reader gives its own error
            if gz:
                if _gzip_isize(path) == expected % 2 ** 32:
                    return  # the trailer of a whole stream: ITK decompresses it once, for the data
                size = len(head)
                while chunk := f.read(1 << 22):
                    size += len(chunk)
            else:
                size = path.stat().st_size
    except gzip.BadGzipFile:
        raise InputError(f"{path}: cannot be read as an image (named .gz but not gzip-compressed)") from None
    except (EOFError, zlib.error) as exc:
        raise InputError(f"{path}: the file is damaged or cut short (its gzip stream ends early: {exc}); "
                         "nothing was read from it. Copy or download it again") from None
    if size < expected:
        raise InputError(f"{path}: the file is cut short: {size:,} bytes where its header promises {expected:,}; "
                         "nothing was read from it. Copy or download it again")


def read_image(path: str | os.PathLike, series: str | None = None) -> sitk.Image:
    """Read a 3D image file or a DICOM series folder (``series``: the SeriesInstanceUID to read when
    the folder holds several); clear :class:`InputError` otherwise."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if series is not None and not p.is_dir():
        raise InputError(f"{p}: --series picks a series in a DICOM folder; this is a file")
    if p.is_file() and p.name.lower().endswith((".nii", ".nii.gz")):
        check_complete_nifti(p)
    try:
        image = _read_dicom_series(p, series) if p.is_dir() else sitk.ReadImage(str(p))
    except InputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise InputError(f"{p}: cannot be read as an image ({first})") from None
    return image


def read_volume(path: str | os.PathLike, series: str | None = None) -> Volume:
    """Read a 3D single-component volume (a file, or a DICOM folder: ``series`` picks one of
    several). Array in (z, y, x), native dtype (HU for CT)."""
    image = read_image(path, series)
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() == 2 or (image.GetDimension() == 3 and image.GetSize()[2] == 1 and not Path(path).is_dir()):
        raise InputError(f"{path}: a 2D image; a 3D volume (several slices) is needed")
    return Volume.from_sitk(image, str(path))


def read_label(path: str | os.PathLike) -> Volume:
    """Read a label map; the array is converted to an integer type."""
    vol = read_volume(path)
    if not np.issubdtype(vol.array.dtype, np.integer):
        rounded = np.rint(vol.array)
        if not np.allclose(rounded, vol.array):
            raise InputError(f"{path}: label map has non-integer values; is it an image rather than a label?")
        vol.array = rounded.astype(np.int32)
    return vol


def parse_label_spec(spec: str | int | Iterable[int]) -> tuple[int, ...]:
    """Label values from what a user writes: a target name (``liver``, ``kidney``, ...), one value
    (``5``), several (``2,3`` or ``2+3``), or ints. Raises :class:`InputError` for anything else,
    and for 0 or negative values (0 is background)."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in TARGET_LABELS:
            return TARGET_LABELS[text]
        try:
            values = tuple(int(v) for v in text.replace("+", ",").split(",") if v.strip())
        except ValueError:
            raise InputError(f"label '{spec}' is neither a target ({', '.join(TARGET_LABELS)}) nor label values "
                             "like 5 or 2,3") from None
    elif isinstance(spec, (int, np.integer)):
        values = (int(spec),)
    else:
        values = tuple(int(v) for v in spec)
    if not values:
        raise InputError(f"label '{spec}' names no label value")
    if any(v <= 0 for v in values):
        raise InputError(f"label values must be positive (0 is background), got {values}")
    return values


def select_labels(array: np.ndarray, values: Iterable[int] | int | str) -> np.ndarray:
    """Binary uint8 mask of voxels whose label is in ``values`` (see :func:`parse_label_spec`)."""
    return np.isin(array, parse_label_spec(values)).astype(np.uint8)


def resample_to(moving: Volume, reference: Volume, *, is_label: bool = True, default: float = 0) -> Volume:
    """Resample ``moving`` onto ``reference``'s grid in physical space (identity transform).

    Labels use nearest neighbour; images linear interpolation. Raises :class:`GeometryError`
    when the two volumes do not overlap at all (e.g. a label with a wrong origin).
    """
    check_overlap(moving, reference)
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    out = sitk.Resample(moving.to_sitk(), reference.to_sitk(), sitk.Transform(), interpolator, default)
    return Volume(sitk.GetArrayFromImage(out), reference.geometry, moving.source)


def physical_bounds(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS bounding box (min, max) in mm of the voxel centres."""
    z, y, x = vol.shape
    corners = np.array([[i, j, k, 1.0] for i in (0, x - 1) for j in (0, y - 1) for k in (0, z - 1)])
    pts = corners @ vol.geometry.index_to_lps().T
    return pts[:, :3].min(0), pts[:, :3].max(0)


def check_overlap(a: Volume, b: Volume) -> None:
    lo_a, hi_a = physical_bounds(a)
    lo_b, hi_b = physical_bounds(b)
    tol = max(max(a.geometry.spacing), max(b.geometry.spacing))
    if np.any(lo_a > hi_b + tol) or np.any(lo_b > hi_a + tol):
        raise GeometryError(
            f"{a.source or 'image'} and {b.source or 'image'} do not overlap in physical space "
            f"(LPS bounds {np.round(lo_a, 1)}..{np.round(hi_a, 1)} vs {np.round(lo_b, 1)}..{np.round(hi_b, 1)} mm); "
            "check the files' origins"
        )


def label_on_image_grid(label: Volume, image: Volume, *, require_same_grid: bool = False,
                        option: str | None = None, what: str = "mask") -> Volume:
    """Return ``label`` on ``image``'s grid: as is when grids match, else resampled (nearest).

    With ``require_same_grid`` a mismatch is an error instead of a resample; its message names
    ``option``, the command's flag that resamples.
    """
    if image.geometry.same_grid_as(label.geometry, image.shape, label.shape):
        return Volume(label.array, image.geometry, label.source)
    if require_same_grid:
        from polycl.validate import require_same_grid as require

        require(image, label, what, option)
    return resample_to(label, image, is_label=True)


def write_volume(volume: Volume, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write atomically: to a temporary file in the same folder, then rename."""
    out = Path(path)
    if not has_image_suffix(out):
        raise InputError(f"{out}: output must end in one of {', '.join(IMAGE_SUFFIXES)}")
    suffix = next(s for s in IMAGE_SUFFIXES if str(out).lower().endswith(s))
    with atomic_path(out, suffix) as tmp:
        sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=compress)
    return out


def write_mask_like(mask: np.ndarray, reference: Volume, path: str | os.PathLike) -> Path:
    """Write a (z, y, x) mask in ``reference``'s exact geometry as uint8."""
    if mask.shape != reference.shape:
        raise GeometryError(f"mask shape {mask.shape} differs from the image's {reference.shape}")
    return write_volume(Volume(mask.astype(np.uint8), reference.geometry), path)

