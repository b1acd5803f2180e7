"""Checks on a command's inputs and outputs made before any work, so that a bad path costs the user
seconds, not a finished computation, and nothing a user has is overwritten by mistake.

Light on purpose: it imports no torch (the cost of a command's start), so the command line answers a
bad path in well under a second. The rules:

* an input must exist;
* an output must not be one of the inputs (compared after resolving links and ``..``; a batch's
  output folder must not be its input folder), so a CT is never replaced by its mask;
* an output's folder must be a folder (not under a regular file) and writable; missing folders are
  created by the write itself;
* an existing output is replaced only with ``--overwrite``: otherwise the case is skipped, and the
  command says so (:func:`existing_output_line`). Batch runs follow the same rule per case.
"""

from __future__ import annotations

import os
from pathlib import Path

from polycl.errors import InputError

#: The rule for outputs that exist, as the command line prints it.
OVERWRITE_RULE = "an existing output is kept (skipped) unless --overwrite is given"


def require_inputs(*paths: str | os.PathLike) -> None:
    """Each of ``paths`` exists (a file or a folder); else one :class:`InputError` naming it."""
    for p in paths:
        if p is not None and not Path(p).exists():
            raise InputError(f"{p}: no such file or folder")


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def require_writable_folder(folder: str | os.PathLike, what: str = "output") -> None:
    """``folder`` (existing or to be created) can receive files: no regular file on its path, and the
    nearest existing folder on it writable by this user."""
    target = Path(folder)
    existing = _nearest_existing(target)
    if not existing.is_dir():
        raise InputError(f"{target}: the {what} would be under {existing}, which is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{target}: cannot write the {what} here ({existing} is not writable)")


def check_output_file(output: str | os.PathLike, inputs: list[str | os.PathLike], *,
                      what: str = "output") -> Path:
    """Refuse an ``output`` file path that is one of ``inputs`` (a file, or a file inside an input
    DICOM folder) or that cannot be written; returns it as a Path."""
    out = Path(output)
    for p in inputs:
        if p is None:
            continue
        src = Path(p)
        if _same(out, src) or (src.is_dir() and out.resolve().is_relative_to(src.resolve())):
            raise InputError(f"{out}: the {what} would overwrite the input {p}; choose another output path")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; the {what} must be a file such as mask.nii.gz")
    require_writable_folder(out.parent if str(out.parent) else Path("."), what)
    if out.exists() and not os.access(out, os.W_OK):
        raise InputError(f"{out}: the existing {what} is read-only; it is not replaced")
    return out


def check_output_folder(output: str | os.PathLike, input_folder: str | os.PathLike) -> Path:
    """Refuse a batch ``output`` folder that is the ``input_folder`` itself, that is a file, or that
    cannot be written."""
    out, src = Path(output), Path(input_folder)
    if _same(out, src):
        raise InputError(f"{out}: the output folder is the input folder; the masks would sit among the CTs "
                         "(and be read as cases on the next run). Choose another folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; a batch writes into an output folder")
    require_writable_folder(out, "output folder")
    return out


def existing_output_line(output: str | os.PathLike) -> str:
    """What a command prints when it keeps an existing output."""
    return f"{output}: exists, kept (skipped; {OVERWRITE_RULE})"


def image_output(output: str | os.PathLike, inputs: list, *, overwrite: bool, what: str = "mask") -> Path | None:
    """The checked output file of a one-image command (``segment``, ``refine``, ``propagate``): an image
    file name, the ``inputs`` present, not one of them, writable. None when it exists and is kept (the
    line saying so is printed): the command then has nothing to do."""
    from polycl.io import has_image_suffix

    out = Path(output)
    if not has_image_suffix(out):
        raise InputError(f"{out}: the output must be an image file such as mask.nii.gz")
    require_inputs(*inputs)
    check_output_file(out, inputs, what=what)
    if out.exists() and not overwrite:
        print(existing_output_line(out))
        return None
    return out
