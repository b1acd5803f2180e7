"""The data folder (``--data``): what the page may open and where Save writes. No trame, no MRML;
file kinds and labelled layouts are polycl's own (:mod:`polycl.io`, :mod:`polycl.cases`).

The page never sends a path: it picks an entry of :func:`listImages` by its relative name, and the
server resolves only names that are in the listing (:meth:`DataFolder.resolve`), so nothing outside
``--data`` can be read. Links placed in the folder by whoever started the server are followed (that
is how a server exposes a dataset kept elsewhere); names with ``..`` or absolute paths are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from polycl.cases import find_labelled_cases
from polycl.errors import InputError
from polycl.io import has_image_suffix, is_dicom_file, strip_image_suffix

#: What this app writes (never offered as a CT to open).
OUTPUT_MARKERS = (".polycl.", ".seg.nrrd")
MAX_DEPTH = 4
#: Label volumes of labelled folders (``labelsTr/``, ``<case>/label.*``): not offered as a CT.
LABEL_FOLDERS = ("labelsTr",)


@dataclass(frozen=True)
class Entry:
    name: str  # relative to the data folder, '/'-separated
    kind: str  # "file" or "dicom"

    @property
    def title(self) -> str:
        return self.name + ("/ (DICOM series)" if self.kind == "dicom" else "")


def _isLabelFile(folder: Path, name: str) -> bool:
    return folder.name in LABEL_FOLDERS or (name.lower().startswith("label.") and has_image_suffix(name))


def isLabelledFolder(folder: Path) -> bool:
    """Fine-tuning data as ``polycl finetune`` reads it (:func:`polycl.cases.find_labelled_cases`:
    ``imagesTr/`` + ``labelsTr/``, or case folders with ``image.*`` + ``label.*``, every case complete)."""
    try:
        return bool(find_labelled_cases(folder))
    except InputError:
        return False


class DataFolder:
    def __init__(self, root):
        self.root = Path(root).absolute()
        if not self.root.is_dir():
            raise FileNotFoundError(f"--data {root}: not a folder")

    def _walk(self):
        """(folder, its subfolder names, its file names) under the root, MAX_DEPTH levels deep, hidden
        folders skipped; emptying the subfolder list (in place) skips what is below the folder."""
        rootDepth = len(self.root.parts)
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            here = Path(dirpath)
            depth = len(here.parts) - rootDepth
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
            yield here, dirnames, filenames

    def listImages(self) -> list[Entry]:
        """NIfTI/NRRD/MHA files and DICOM series folders under the root (sorted; outputs of this app excluded)."""
        entries: list[Entry] = []
        for here, _, filenames in self._walk():
            rel = here.relative_to(self.root).as_posix()
            dicom = False
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                lower = name.lower()
                if any(m in lower for m in OUTPUT_MARKERS) or _isLabelFile(here, name):
                    continue
                if has_image_suffix(lower):
                    entries.append(Entry(name if rel == "." else f"{rel}/{name}", "file"))
                elif not dicom and rel != "." and is_dicom_file(here / name):
                    dicom = True
            if dicom:
                entries.append(Entry(rel, "dicom"))
        return sorted(entries, key=lambda e: e.name)

    def resolve(self, name: str) -> tuple[Entry, list[str]]:
        """The listed entry called ``name`` and the files to read (one file, or a series' files)."""
        if not name or name.startswith("/") or ".." in Path(name).parts or "\\" in name:
            raise PermissionError(f"{name!r}: not a name inside the data folder")
        for entry in self.listImages():
            if entry.name == name:
                path = self.root / entry.name
                if entry.kind == "file":
                    return entry, [str(path)]
                files = sorted(str(p) for p in path.iterdir() if p.is_file() and is_dicom_file(p))
                return entry, files
        raise FileNotFoundError(f"{name!r} is not in the data folder's listing")

    def listLabelledFolders(self) -> list[str]:
        """Folders under the root (``.``: the root itself) laid out as labelled CT for Fine-tune."""
        found: list[str] = []
        for here, dirnames, _ in self._walk():
            if isLabelledFolder(here):
                found.append(here.relative_to(self.root).as_posix())
                dirnames[:] = []  # its cases are not folders of their own
        return sorted(found)

    def resolveLabelled(self, name: str) -> Path:
        """The listed labelled folder called ``name`` (as for :meth:`resolve`: listed names only)."""
        if not name or name.startswith("/") or ".." in Path(name).parts or "\\" in name:
            raise PermissionError(f"{name!r}: not a name inside the data folder")
        if name not in self.listLabelledFolders():
            raise FileNotFoundError(f"{name!r} is not a labelled folder of the data folder")
        return self.root / name

    def outputPath(self, entry: Entry, suffix: str) -> Path:
        """Where Save writes for ``entry``: beside it, ``<stem>.polycl<suffix>`` (inside the root)."""
        out = self.root / f"{strip_image_suffix(entry.name.rstrip('/'))}.polycl{suffix}"
        if self.root not in out.parents:
            raise PermissionError("output outside the data folder")
        return out
