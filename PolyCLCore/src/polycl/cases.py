"""Finding image/label pairs (and plain images) in a user's folder.

Layouts understood by :func:`find_labelled_cases`:

* MSD / nnU-Net: ``imagesTr/<case>[_0000].nii.gz`` + ``labelsTr/<case>.nii.gz``;
* one folder per case: ``<case>/image.<ext>`` (or an ``image/`` DICOM folder) + ``<case>/label.<ext>``.

Every problem (an image without a label, a label without an image, several candidates) is
collected and reported together, by file name, before anything is trained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from polycl.errors import InputError
from polycl.io import has_image_suffix, is_dicom_folder, strip_image_suffix

_CHANNEL = re.compile(r"_\d{4}$")  # nnU-Net channel suffix, e.g. case_0000


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    label: Path | None = None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and has_image_suffix(p) and not p.name.startswith("."))


def find_images(folder: str | Path) -> list[Case]:
    """Unlabelled inputs for batch segmentation: image files and DICOM-series subfolders."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    cases = [Case(strip_image_suffix(p.name), p) for p in _images_in(root)]
    cases += [Case(p.name, p) for p in sorted(root.iterdir()) if is_dicom_folder(p)]
    if not cases:
        raise InputError(f"{root}: no images found (NIfTI/NRRD/MHA files or DICOM series folders)")
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{root}: several inputs share the case name(s) {duplicates}; rename them")
    return sorted(cases, key=lambda c: c.name)


def _msd_cases(root: Path) -> tuple[list[Case], list[str]]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    problems = []
    images = {_CHANNEL.sub("", strip_image_suffix(p.name)): p for p in _images_in(images_dir)}
    labels = {strip_image_suffix(p.name): p for p in _images_in(labels_dir)} if labels_dir.is_dir() else {}
    for name in sorted(set(images) - set(labels)):
        problems.append(f"image {images[name].relative_to(root)} has no label in labelsTr/")
    for name in sorted(set(labels) - set(images)):
        problems.append(f"label {labels[name].relative_to(root)} has no image in imagesTr/")
    return [Case(n, images[n], labels[n]) for n in sorted(set(images) & set(labels))], problems


def _case_folder(folder: Path, root: Path) -> tuple[Case | None, str | None]:
    def pick(stem: str) -> list[Path]:
        found = [p for p in _images_in(folder) if strip_image_suffix(p.name).lower() == stem]
        sub = folder / stem
        if is_dicom_folder(sub):
            found.append(sub)
        return found

    images, labels = pick("image"), pick("label")
    rel = folder.relative_to(root)
    if len(images) != 1 or len(labels) != 1:
        what = []
        if len(images) != 1:
            what.append(f"{len(images)} image files (need exactly one image.*)")
        if len(labels) != 1:
            what.append(f"{len(labels)} label files (need exactly one label.*)")
        return None, f"case folder {rel}/: " + " and ".join(what)
    return Case(folder.name, images[0], labels[0]), None


def find_labelled_cases(folder: str | Path) -> list[Case]:
    """All (image, label) pairs under ``folder``; raises :class:`InputError` listing every problem."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    if (root / "imagesTr").is_dir():
        cases, problems = _msd_cases(root)
    else:
        cases, problems = [], []
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            case, problem = _case_folder(sub, root)
            if case:
                cases.append(case)
            elif problem:
                problems.append(problem)
    if problems:
        raise InputError(f"{root}: {len(problems)} problem(s) with the training data:\n  - " + "\n  - ".join(problems))
    if not cases:
        raise InputError(
            f"{root}: no labelled cases found. Use imagesTr/ + labelsTr/ (MSD/nnU-Net) or one folder per case "
            "holding image.<ext> and label.<ext>"
        )
    return cases
