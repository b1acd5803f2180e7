"""Run a Slicer scripted module's Logic against real MRML (the slicer-core wheel) without Slicer.

slicer-core gives real MRML, Segmentations, Volumes and Markups logics and ``slicer.util``, but
no Qt application. :func:`install` fills the gaps exactly as far as a module's Logic needs:

* a ``vtkMRMLScene`` and a ``vtkSlicerApplicationLogic``; the application logic is KEPT in
  :data:`STATE` (dropping the last Python reference to it crashes on ROI nodes);
* the Segmentations, Volumes and Markups module logics, each ``SetMRMLScene``-d (the
  Segmentations logic registers the labelmap/closed-surface converters; segments made before that
  have no converters);
* ``slicer.mrmlScene``, ``slicer.app`` (``None``), ``slicer.modules.<name>.logic()`` for the
  logics above (``slicer.util``'s segment helpers call them);
* the stand-ins for ``qt``, ``slicer.i18n``, ``slicer.ScriptedLoadableModule`` and
  ``slicer.parameterNodeWrapper`` (``Testing/slicershim.py``: explicit names, no catch-all), so that
  the module file, which imports them at the top, is imported under pytest. Widgets cannot run.

Usage (pytest conftest)::

    from slicer_harness import install, new_scene
    install()
    ...
    scene = new_scene()  # a clean scene for each test
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

_MODULE_DIR = str(Path(__file__).resolve().parents[1] / "PolyCLSegment")  # the module file and its packages
_HERE = str(Path(__file__).resolve().parent)  # slicershim
for _p in (_MODULE_DIR, _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

#: Objects that must stay alive for the whole process (application logic, module logics).
STATE: dict = {}


def install():
    """Make ``import slicer``/``qt`` and the module base classes work; idempotent."""
    if STATE.get("installed"):
        return STATE
    import slicer
    import vtk  # noqa: F401  (slicer-core's vtk)

    from slicershim import install as install_shim

    install_shim()
    new_scene()
    STATE["installed"] = True
    return STATE


def new_scene():
    """A fresh ``vtkMRMLScene`` wired to the application and module logics; sets slicer.mrmlScene."""
    import slicer

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    seg_logic.SetMRMLApplicationLogic(app_logic)
    seg_logic.SetMRMLScene(scene)
    vol_logic = slicer.vtkSlicerVolumesLogic()
    vol_logic.SetMRMLApplicationLogic(app_logic)
    vol_logic.SetMRMLScene(scene)
    markups_logic = slicer.vtkSlicerMarkupsLogic()
    markups_logic.SetMRMLApplicationLogic(app_logic)
    markups_logic.SetMRMLScene(scene)
    # Keep every logic alive (the application logic above all): see the module docstring.
    STATE.setdefault("old", []).append(STATE.get("current"))
    STATE["current"] = SimpleNamespace(scene=scene, app_logic=app_logic, segmentations=seg_logic,
                                       volumes=vol_logic, markups=markups_logic)
    slicer.mrmlScene = scene
    slicer.modules = SimpleNamespace(
        segmentations=SimpleNamespace(logic=lambda: seg_logic),
        volumes=SimpleNamespace(logic=lambda: vol_logic),
        markups=SimpleNamespace(logic=lambda: markups_logic),
    )
    return scene
