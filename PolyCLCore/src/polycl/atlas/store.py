"""Atlases: labelled CT scans that locate organs by anatomy.

Two sources, used together (several atlases vote, :mod:`polycl.atlas.prior`):

* the bundled atlas ``polycl/data/atlas/``: a derived, downsampled copy of the TotalSegmentator
  example CT (CC BY 4.0, Wasserthal et al. 2023) built by ``PolyCLCore/scripts/build_atlas.py``;
  its files' SHA-256 are in ``atlas.json`` and checked when it is loaded;
* the user's atlases under ``$POLYCL_HOME/atlases/<name>/`` (``image.nii.gz``, ``labels.nii.gz``,
  ``atlas.json``), added by ``polycl atlas add`` (:func:`add_atlas`, atomic: the folder appears
  complete or not at all).

An atlas's label map holds organs by name (``{"spleen": 1, "kidney_right": 2, ...}``); the organ
names are the targets that ``polycl segment --target NAME`` can segment with no network.

``POLYCL_BUNDLED_ATLAS=off`` (or 0/no/false) leaves the bundled atlas out of :func:`load_atlases` and
:func:`atlas_organs`, so only the user's atlases vote: for studies where the scan being segmented is the
bundled atlas's own scan (``scripts/loso_study.py``), or a user who wants only their own atlases.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from polycl.errors import ChecksumError, InputError
from polycl.hashing import sha256_file
# TOTALSEG_LABELS: the default map of ``polycl atlas add`` (a user passes --labels otherwise)
from polycl.io import TOTALSEG_LABELS, describe_values
from polycl.volume import Volume

BUNDLED_NAME = "totalsegmentator-example"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Organ objects of a segmentation target: the pipeline treats each as its own 3D object.
TARGET_OBJECTS = {"kidney": ("kidney_right", "kidney_left"), "kidneys": ("kidney_right", "kidney_left")}


@dataclass
class Atlas:
    """One labelled CT. ``image``: HU; ``labels``: integer label map in the same physical space (its
    grid may differ, e.g. a finer one); ``organs``: name -> label value."""

    name: str
    image: Volume
    labels: Volume
    organs: dict = field(default_factory=dict)
    source: str = "bundled"  # or "user"


def bundled_atlas_dir() -> Path:
    return Path(str(resources.files("polycl") / "data" / "atlas"))


def user_atlases_dir() -> Path:
    from polycl.home import polycl_home

    return polycl_home() / "atlases"


def _read(path: Path) -> Volume:
    from polycl.io import read_volume

    return read_volume(path)


def _load(folder: Path, source: str, check_sha: bool) -> Atlas:
    meta = json.loads((folder / "atlas.json").read_text())
    files = meta.get("files", {})
    image_name = meta.get("image", "atlas_ct.nii.gz")
    label_name = meta.get("label", "atlas_labels.nii.gz")
    if check_sha:
        for fname, sha in files.items():
            if sha256_file(folder / fname) != sha:
                raise ChecksumError(f"atlas file {folder / fname} does not match its registered SHA-256; "
                                    "reinstall polycl-core or rebuild it with scripts/build_atlas.py")
    return Atlas(meta.get("name", folder.name), _read(folder / image_name), _read(folder / label_name),
                 {str(k): int(v) for k, v in meta["labels"].items()}, source)


def bundled_atlas() -> Atlas:
    return _load(bundled_atlas_dir(), "bundled", check_sha=True)


def user_atlas_names() -> list[str]:
    root = user_atlases_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/atlas.json") if not p.parent.name.startswith("."))


def bundled_enabled() -> bool:
    """False when ``POLYCL_BUNDLED_ATLAS`` is off/0/no/false (see the module docstring); unset: True."""
    value = os.environ.get("POLYCL_BUNDLED_ATLAS", "on").strip().lower()
    if value not in ("on", "1", "yes", "true", "off", "0", "no", "false", ""):
        raise InputError(f"POLYCL_BUNDLED_ATLAS must be on or off, got '{value}'")
    return value not in ("off", "0", "no", "false")


def load_atlases() -> list[Atlas]:
    """The bundled atlas (unless :func:`bundled_enabled` is False), then every user atlas (a broken user
    atlas is skipped, not fatal)."""
    atlases = [bundled_atlas()] if bundled_enabled() else []
    for name in user_atlas_names():
        try:
            atlases.append(_load(user_atlases_dir() / name, "user", check_sha=False))
        except (OSError, ValueError, KeyError, InputError):
            continue
    return atlases


def atlas_organs() -> list[str]:
    """Every organ name some atlas has (bundled + user), sorted: the atlas-based targets."""
    names = set(json.loads((bundled_atlas_dir() / "atlas.json").read_text())["labels"]) if bundled_enabled() else set()
    for name in user_atlas_names():
        try:
            names |= set(json.loads((user_atlases_dir() / name / "atlas.json").read_text())["labels"])
        except (OSError, ValueError, KeyError):
            continue
    return sorted(names)


def target_objects(target: str) -> tuple[str, ...]:
    """The atlas organs that make up ``target`` ('kidney' -> right and left kidney; 'spleen' -> spleen);
    empty when no atlas has it."""
    organs = TARGET_OBJECTS.get(target, (target,))
    known = set(atlas_organs())
    return organs if all(o in known for o in organs) else ()


def parse_labels(spec: str | None) -> dict:
    """``liver=5,spleen=1`` -> {"liver": 5, "spleen": 1}; None -> TotalSegmentator's ids."""
    if not spec:
        return dict(TOTALSEG_LABELS)
    out = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        if not name.strip() or not value.strip().isdigit() or int(value) < 1:
            raise InputError(f"--labels: '{part}' is not NAME=VALUE with VALUE >= 1 (e.g. liver=5,spleen=1)")
        out[name.strip()] = int(value)
    return out


def _check_label_map(label_path, values: set[int], labels: dict | None) -> dict:
    """The organ map to store: ``labels`` as given, or TotalSegmentator's when the file looks like one
    of its multi-organ maps (two or more of its organ values). A plain 0/1 mask (or any other values)
    needs ``--labels``: read with TotalSegmentator's map it would become a "spleen" (value 1)."""
    if not values:
        raise InputError(f"{label_path}: holds no labelled voxel (every value is 0); nothing was added")
    if labels:
        return dict(labels)
    known = {v for v in TOTALSEG_LABELS.values() if v in values}
    if len(known) < 2:
        raise InputError(
            f"{label_path}: holds the value(s) {describe_values(values)}, which is not a TotalSegmentator label "
            f"map ({', '.join(f'{k}={v}' for k, v in TOTALSEG_LABELS.items())}); name the organ of each value with "
            f"--labels, e.g. --labels liver={min(values)}; nothing was added")
    return dict(TOTALSEG_LABELS)


def add_atlas(image_path, label_path, *, name: str | None = None, labels: dict | None = None) -> Path:
    """Store a labelled CT as a user atlas; returns its folder. Checks first (3D CT, the label in the
    image's physical space, a label map that is TotalSegmentator's or named by ``labels``, at least one
    named organ present, each organ's volume and median HU plausible: :mod:`polycl.anatomy`), then
    writes into a temporary folder that is renamed into place, so a refused or failed add leaves
    nothing behind."""
    from polycl.anatomy import organ_problem
    from polycl.io import label_on_image_grid, read_label, read_volume
    from polycl.validate import require_ct

    image = read_volume(image_path)
    require_ct(image)
    label = label_on_image_grid(read_label(label_path), image)
    values = set(int(v) for v in np.unique(label.array)) - {0}
    organs = _check_label_map(label_path, values, labels)
    present = {k: v for k, v in organs.items() if v in values}
    if not present:
        raise InputError(f"{label_path}: none of the labels {organs} is present (it holds "
                         f"{describe_values(values)}); nothing was added")
    voxel_ml = image.geometry.voxel_ml
    problems = [p for p in (organ_problem(organ, float(np.count_nonzero(label.array == v)) * voxel_ml,
                                          float(np.median(image.array[label.array == v])))
                            for organ, v in present.items()) if p]
    if problems:
        raise InputError(f"{label_path}: implausible organ(s) for an atlas: {'; '.join(problems)}. Check --labels "
                         "(which value is which organ); nothing was added")
    name = name or Path(str(image_path).rstrip("/")).name.split(".")[0]
    if not _NAME.match(name):
        raise InputError(f"atlas name '{name}' must be 1-64 letters, digits, '.', '_' or '-'")
    if name == BUNDLED_NAME:
        raise InputError(f"'{name}' is the bundled atlas's name; choose another")
    dest = user_atlases_dir() / name
    if dest.exists():
        raise InputError(f"an atlas named '{name}' exists ({dest}); choose another name or remove it first "
                         f"(polycl atlas remove {name})")
    keep = np.zeros(label.array.shape, np.uint8)
    for value in present.values():
        keep[label.array == value] = value
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=dest.parent))
    try:
        img = image.to_sitk()
        sitk.WriteImage(sitk.Cast(img, sitk.sitkInt16), str(tmp / "image.nii.gz"), useCompression=True)
        sitk.WriteImage(Volume(keep, image.geometry).to_sitk(), str(tmp / "labels.nii.gz"), useCompression=True)
        meta = {"name": name, "labels": present, "image": "image.nii.gz", "label": "labels.nii.gz",
                "source": f"{image_path} + {label_path}"}
        (tmp / "atlas.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def remove_atlas(name: str) -> Path:
    """Delete the user atlas ``name`` (its folder); the bundled atlas cannot be removed (turn it off
    with ``POLYCL_BUNDLED_ATLAS=off``). Returns the folder that was removed."""
    if name == BUNDLED_NAME:
        raise InputError(f"'{name}' is the bundled atlas; it cannot be removed (POLYCL_BUNDLED_ATLAS=off leaves it out)")
    if not _NAME.match(name or "") or name not in user_atlas_names():
        known = ", ".join(user_atlas_names()) or "none"
        raise InputError(f"no user atlas named '{name}' (user atlases: {known})")
    dest = user_atlases_dir() / name
    # renamed first, so the atlas is gone at once even if deleting its files is interrupted
    trash = Path(tempfile.mkdtemp(prefix=f".tmp-removed-{name}-", dir=dest.parent))
    os.replace(dest, trash / name)
    shutil.rmtree(trash, ignore_errors=True)
    return dest
