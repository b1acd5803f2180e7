"""Slices for contrastive pre-training: every slice knows its scan, its index and (where known)
whether it contains the target organ.

A *scan* is a CT volume (file or DICOM-series folder) with an optional label volume. Slices are
axial slices of the volume after :func:`polycl.preprocess.to_canonical` (LPS index order: slice 0
is the most inferior), windowed (level 40 / width 400 HU), scaled to 0..1 and resized to
``size`` x ``size`` (the paper's preprocessing). By default only the middle 30% of each scan's
slices are kept (the paper's selection).

Organ presence T(slice) comes from a label volume (any voxel of the target labels in that slice;
labels on another grid are resampled onto the image in physical space) or from a CSV file with
columns ``case,slice,present`` (``slice`` is the canonical slice index in the whole scan, before
selection; ``present`` is 1/0, true/false or yes/no). Slices with neither are "unknown" (-1).
CSV rows override label-derived presence for the slices they name.

Preprocessed slices are held in memory for the whole run and, with ``cache_dir``, stored on disk
keyed by the file, its modification time and the preprocessing settings, so a second run (or
every rank of a distributed run after the first) does not re-read the volumes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from polycl.errors import InputError
from polycl.io import (has_image_suffix, is_dicom_folder, label_on_image_grid, read_label, read_volume, select_labels,
                       strip_image_suffix)
from polycl.preprocess import PreprocessConfig, prepare_slices, to_canonical
from polycl.progress import Progress

UNKNOWN, ABSENT, PRESENT = -1, 0, 1
_CHANNEL = re.compile(r"_\d{4}$")  # nnU-Net channel suffix (case_0000)


@dataclass(frozen=True)
class Scan:
    """One CT volume for pre-training. ``label_values``: which label ids are the target organ."""

    name: str
    image: Path
    label: Path | None = None
    label_values: tuple[int, ...] = (5,)


@dataclass
class SliceSelection:
    """Which slices of each scan are used: the middle ``fraction`` (at least ``min_slices``)."""

    fraction: float = 0.3
    min_slices: int = 1

    def indices(self, n_slices: int) -> np.ndarray:
        if not 0 < self.fraction <= 1:
            raise InputError(f"slice fraction must be in (0, 1], got {self.fraction}")
        count = min(n_slices, max(int(self.min_slices), 1, int(round(n_slices * self.fraction))))
        start = (n_slices - count) // 2
        return np.arange(start, start + count)


@dataclass
class SliceDataset:
    """All selected slices of all scans, preprocessed.

    ``images``: (N, 1, size, size) float32 in 0..1. ``scan``: (N,) index into ``scans``.
    ``slice_index``: (N,) canonical slice index within its scan. ``presence``: (N,) int8,
    1 organ present, 0 absent, -1 unknown. ``n_slices``: slices per scan before selection.
    """

    scans: list[Scan]
    images: torch.Tensor
    scan: np.ndarray
    slice_index: np.ndarray
    presence: np.ndarray
    n_slices: list[int]
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    selection: SliceSelection = field(default_factory=SliceSelection)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def case_names(self) -> list[str]:
        return [s.name for s in self.scans]

    def summary(self) -> list[dict]:
        """Per scan: name, slices used / in the scan, and how many are organ present/absent/unknown."""
        rows = []
        for k, s in enumerate(self.scans):
            sel = self.scan == k
            p = self.presence[sel]
            rows.append({"case": s.name, "slices": int(sel.sum()), "of": int(self.n_slices[k]),
                         "present": int((p == PRESENT).sum()), "absent": int((p == ABSENT).sum()),
                         "unknown": int((p == UNKNOWN).sum()), "label": str(s.label) if s.label else None})
        return rows

    def describe(self) -> dict:
        return {"scans": self.summary(), "preprocess": self.preprocess.to_dict(), "selection": asdict(self.selection)}


# ----------------------------------------------------------------------------------------------
# finding scans in a folder
# ----------------------------------------------------------------------------------------------

def _images_in(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and has_image_suffix(p) and not p.name.startswith(".")]
    return sorted(files) + sorted(p for p in folder.iterdir() if is_dicom_folder(p))


def find_scans(data_dir: str | os.PathLike, labels_dir: str | os.PathLike | None = None,
               label_values: Sequence[int] = (5,)) -> list[Scan]:
    """Scans in ``data_dir``: image files (NIfTI/NRRD/MHA) and DICOM-series subfolders at its top
    level, or ``imagesTr/`` (MSD / nnU-Net layout, labels then default to ``labelsTr/``).
    A label is the file in ``labels_dir`` whose name without suffix equals the case name."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    if (root / "imagesTr").is_dir():
        images = _images_in(root / "imagesTr")
        if labels_dir is None and (root / "labelsTr").is_dir():
            labels_dir = root / "labelsTr"
    else:
        images = _images_in(root)
    if not images:
        raise InputError(f"{root}: no CT volumes found (NIfTI/NRRD/MHA files or DICOM-series folders)")
    labels: dict[str, Path] = {}
    if labels_dir is not None:
        ldir = Path(labels_dir)
        if not ldir.is_dir():
            raise InputError(f"{ldir}: labels folder not found")
        labels = {strip_image_suffix(p.name): p for p in _images_in(ldir) if p.is_file()}
    scans, names = [], set()
    for p in images:
        name = _CHANNEL.sub("", strip_image_suffix(p.name))
        if labels_dir is not None and Path(labels_dir).resolve() == p.parent.resolve():
            continue
        if name in names:
            raise InputError(f"{root}: several volumes share the case name '{name}'; rename them")
        names.add(name)
        scans.append(Scan(name, p, labels.get(name), tuple(int(v) for v in label_values)))
    return scans


def read_presence_csv(path: str | os.PathLike) -> dict[str, dict[int, int]]:
    """Read ``case,slice,present`` rows into {case: {slice: 0|1}}; clear errors for bad rows."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: presence CSV not found")
    truth = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0, "y": 1, "n": 0}
    out: dict[str, dict[int, int]] = {}
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        if not {"case", "slice", "present"} <= set(fields):
            raise InputError(f"{p}: needs a header with columns case,slice,present (found {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            try:
                s = int(row["slice"])
            except ValueError:
                raise InputError(f"{p}:{line}: slice '{row['slice']}' is not an integer") from None
            v = truth.get(row["present"].lower())
            if v is None:
                raise InputError(f"{p}:{line}: present '{row['present']}' must be 1/0, true/false or yes/no")
            prev = out.setdefault(row["case"], {}).get(s)
            if prev is not None and prev != v:
                raise InputError(f"{p}:{line}: case {row['case']} slice {s} is listed as both present and absent")
            out[row["case"]][s] = v
    return out


# ----------------------------------------------------------------------------------------------
# loading and caching
# ----------------------------------------------------------------------------------------------

def _stamp(path: Path | None) -> list:
    if path is None:
        return []
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [str(path.resolve())] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def _cache_key(scan: Scan, pre: PreprocessConfig, sel: SliceSelection) -> str:
    blob = json.dumps({"v": 1, "image": _stamp(scan.image), "label": _stamp(scan.label), "values": scan.label_values,
                       "pre": pre.to_dict(), "sel": asdict(sel)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_scan(scan: Scan, pre: PreprocessConfig, sel: SliceSelection) -> dict:
    """Read, check (CT in HU), reorient, select and preprocess one scan.

    Returns {"images": (n, 1, size, size) float32, "slice_index": (n,), "presence": (n,) int8,
    "n_slices": int}. Presence is computed from the label at full resolution before resizing.
    """
    from polycl.validate import check_3d_volume, require_ct

    vol = read_volume(scan.image)
    check_3d_volume(vol, min_slices=1)
    try:
        require_ct(vol)
    except InputError as exc:
        raise type(exc)(f"scan '{scan.name}': {exc}") from None
    hu = to_canonical(vol)
    idx = sel.indices(hu.shape[0])
    presence = np.full(len(idx), UNKNOWN, dtype=np.int8)
    if scan.label is not None:
        lab = label_on_image_grid(read_label(scan.label), vol)
        mask = to_canonical(lab.with_array(select_labels(lab.array, scan.label_values)))
        presence = mask[idx].reshape(len(idx), -1).any(axis=1).astype(np.int8)
    images = prepare_slices(hu[idx], pre).contiguous()
    return {"images": images, "slice_index": idx.astype(np.int64), "presence": presence, "n_slices": int(hu.shape[0])}


def build_slice_dataset(scans: Iterable[Scan], *, preprocess: PreprocessConfig | None = None,
                        selection: SliceSelection | None = None, presence_csv: str | os.PathLike | None = None,
                        cache_dir: str | os.PathLike | None = None,
                        progress: Progress | None = None) -> SliceDataset:
    """Load every scan (from the disk cache when possible) into one :class:`SliceDataset`;
    ``progress(scans_loaded, scans, message)`` (:mod:`polycl.progress`). ``preprocess`` and
    ``selection`` default to the paper's (256 px; the middle 30% of each scan)."""
    preprocess, selection = preprocess or PreprocessConfig(), selection or SliceSelection()
    scans = list(scans)
    if not scans:
        raise InputError("no scans to pre-train on")
    csv_presence = read_presence_csv(presence_csv) if presence_csv else {}
    unknown = sorted(set(csv_presence) - {s.name for s in scans})
    if unknown:
        raise InputError(f"presence CSV names case(s) not in the data: {unknown}; known cases: {[s.name for s in scans]}")
    parts = []
    for k, scan in enumerate(scans):
        if progress:
            progress(k, len(scans), f"loading {scan.name}")
        part = None
        cache_file = Path(cache_dir) / f"{scan.name}-{_cache_key(scan, preprocess, selection)}.pt" if cache_dir else None
        if cache_file is not None and cache_file.is_file():
            try:
                part = torch.load(cache_file, map_location="cpu", weights_only=True)
                part = {"images": part["images"], "slice_index": part["slice_index"].numpy(),
                        "presence": part["presence"].numpy(), "n_slices": int(part["n_slices"])}
            except Exception:  # a damaged cache entry is rebuilt
                part = None
        if part is None:
            part = load_scan(scan, preprocess, selection)
            if cache_file is not None:
                from polycl.checkpoint import atomic_torch_save

                atomic_torch_save({"images": part["images"], "slice_index": torch.from_numpy(part["slice_index"]),
                                   "presence": torch.from_numpy(part["presence"]), "n_slices": part["n_slices"]}, cache_file)
        rows = csv_presence.get(scan.name, {})
        if rows:
            bad = sorted(s for s in rows if not 0 <= s < part["n_slices"])
            if bad:
                raise InputError(f"presence CSV: case {scan.name} has {part['n_slices']} slices, but rows name slice(s) {bad[:5]}")
            pres = part["presence"].copy()
            for j, s in enumerate(part["slice_index"]):
                if int(s) in rows:
                    pres[j] = rows[int(s)]
            part["presence"] = pres
        parts.append(part)
    if progress:
        progress(len(scans), len(scans), "slices ready")
    return SliceDataset(
        scans=scans,
        images=torch.cat([p["images"] for p in parts]),
        scan=np.concatenate([np.full(len(p["slice_index"]), k, dtype=np.int64) for k, p in enumerate(parts)]),
        slice_index=np.concatenate([p["slice_index"] for p in parts]),
        presence=np.concatenate([p["presence"] for p in parts]).astype(np.int8),
        n_slices=[p["n_slices"] for p in parts],
        preprocess=preprocess, selection=selection,
    )
