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
* stand-ins for ``qt``, ``ctk``, ``slicer.i18n``, ``slicer.ScriptedLoadableModule`` (Qt-free base
  classes) and ``slicer.parameterNodeWrapper`` (decorators that leave the class usable), so that
  a module file that imports them at the top can be imported under pytest. Widgets cannot run.

Usage (pytest conftest)::

    from slicer_harness import install, new_scene
    install()
    ...
    scene = new_scene()  # a clean scene for each test
"""

from __future__ import annotations

import sys
import types
import unittest
from types import SimpleNamespace

#: Objects that must stay alive for the whole process (application logic, module logics).
STATE: dict = {}


class _Anything:
    """A permissive stand-in object: any attribute, call or subclassing works and does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()

    def __bool__(self):
        return False

    def __iter__(self):
        return iter(())


class _StandInModule(types.ModuleType):
    """A module whose every attribute is a subclassable do-nothing class (for qt, ctk)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (_Anything,), {})
        setattr(self, name, cls)
        return cls


def _scripted_loadable_module():
    """Qt-free versions of Slicer's ScriptedLoadableModule base classes."""
    mod = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent=None):
            self.parent = parent if parent is not None else SimpleNamespace()
            self.moduleName = self.__class__.__name__

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent
            self.moduleName = self.__class__.__name__[: -len("Widget")]

        def setup(self):
            pass

        def cleanup(self):
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = self.__class__.__name__[: -len("Logic")] if self.__class__.__name__.endswith("Logic") else ""

        def getParameterNode(self):
            import slicer

            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
                node.SetSingletonTag(self.moduleName)
                node.SetName(self.moduleName)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):
            print(message)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(mod, cls.__name__, cls)
    mod.__all__ = [c for c in dir(mod) if c.startswith("Scripted")]
    return mod


def _parameter_node_wrapper():
    """``parameterNodeWrapper`` and friends as pass-through decorators / plain annotations."""
    mod = types.ModuleType("slicer.parameterNodeWrapper")

    def parameterNodeWrapper(cls):
        def __init__(self, node=None):
            self.parameterNode = node
            for name in getattr(cls, "__annotations__", {}):
                if hasattr(cls, name):
                    setattr(self, name, getattr(cls, name))

        cls.__init__ = __init__
        return cls

    class _Annotated:
        def __class_getitem__(cls, item):
            return item[0] if isinstance(item, tuple) else item

    def _passthrough(*args, **kwargs):
        return None

    mod.parameterNodeWrapper = parameterNodeWrapper
    mod.parameterPack = parameterNodeWrapper
    for name in ("WithinRange", "Minimum", "Maximum", "Default", "Choice", "Decimals", "SingleStep"):
        setattr(mod, name, _passthrough)
    mod.Annotated = _Annotated
    return mod


def install():
    """Make ``import slicer``/``qt``/``ctk`` and the module base classes work; idempotent."""
    if STATE.get("installed"):
        return STATE
    import slicer
    import vtk  # noqa: F401  (slicer-core's vtk)

    for name in ("qt", "ctk"):
        if name not in sys.modules:
            sys.modules[name] = _StandInModule(name)

    slm = _scripted_loadable_module()
    sys.modules["slicer.ScriptedLoadableModule"] = slm
    slicer.ScriptedLoadableModule = slm

    pnw = _parameter_node_wrapper()
    sys.modules["slicer.parameterNodeWrapper"] = pnw
    slicer.parameterNodeWrapper = pnw

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    sys.modules["slicer.i18n"] = i18n
    slicer.i18n = i18n

    slicer.app = None
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
