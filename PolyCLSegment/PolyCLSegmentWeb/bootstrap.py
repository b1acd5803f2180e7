"""Start slicer-core for the page: ``slicer.*`` pointed at trame-slicer's scene, for the Qt-free Logic.

``PolyCLSegmentLib`` (the Logic, the controller) is a sibling of this package (``PolyCLSegment/``); the
page never imports the Slicer module file ``PolyCLSegment.py`` (its panel needs Qt). The
launcher (``polycl-web``, :mod:`polycl.weblauncher`) or ``python -m PolyCLSegmentWeb`` puts that folder on
``sys.path``, and :func:`moduleDir` makes sure of it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

log = logging.getLogger("polycl.web")

MODULE_DIR = Path(__file__).resolve().parents[1]


def moduleDir() -> Path:
    """``PolyCLSegment/`` on ``sys.path`` (PolyCLSegmentLib and this package)."""
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    return MODULE_DIR


def preloadTorch() -> None:
    """Import torch's compiler stack (and so triton) before VTK makes its first OpenGL context.

    Off screen, VTK renders with Mesa (llvmpipe), which loads the system's LLVM; triton bundles its
    own. Loaded in that order, importing triton later (torch does it on the first model load, on
    the worker thread) crashes the process (seen here: SIGSEGV in triton/knobs.py). Loaded first, both work."""
    try:
        import torch._dynamo  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - no torch: Segment will say so
        log.warning("torch could not be imported: %s", exc)


def wireLogicToScene(slicerApp) -> None:
    """Point the globals the Logic uses (``slicer.mrmlScene``, ``slicer.modules.<name>.logic()``) at
    trame-slicer's scene and module logics."""
    import slicer

    if not hasattr(slicer, "app"):
        slicer.app = None  # no Slicer application: what slicer.util expects outside it
    markups = slicerApp.markups_logic
    markups = getattr(markups, "_logic", markups)
    slicer.mrmlScene = slicerApp.scene
    slicer.modules = SimpleNamespace(
        segmentations=SimpleNamespace(logic=lambda: slicerApp.segmentations_logic),
        volumes=SimpleNamespace(logic=lambda: slicerApp.volumes_logic),
        markups=SimpleNamespace(logic=lambda: markups),
    )
