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

# TotalSegmentator 'total' class ids of the targets we ship models for.
TARGET_LABELS: dict[str, tuple[int, ...]] = {"liver": (5,), "kidney": (2, 3), "spleen": (1,)}


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
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(chosen[0]["paths"])  # already sorted by GDCM: no second scan of the folder
    return reader.Execute()


def read_image(path: str | os.PathLike, series: str | None = None) -> sitk.Image:
    """Read a 3D image file or a DICOM series folder (``series``: the SeriesInstanceUID to read when
    the folder holds several); clear :class:`InputError` otherwise."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if series is not None and not p.is_dir():
        raise InputError(f"{p}: --series picks a series in a DICOM folder; this is a file")
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


def label_on_image_grid(label: Volume, image: Volume, *, require_same_grid: bool = False) -> Volume:
    """Return ``label`` on ``image``'s grid: as is when grids match, else resampled (nearest).

    With ``require_same_grid`` a mismatch is an error instead of a resample.
    """
    if image.geometry.same_grid_as(label.geometry, image.shape, label.shape):
        return Volume(label.array, image.geometry, label.source)
    if require_same_grid:
        raise GeometryError(
            f"label {label.source} (shape {label.shape}, spacing {label.geometry.spacing}) is not on the grid of "
            f"image {image.source} (shape {image.shape}, spacing {image.geometry.spacing})"
        )
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

