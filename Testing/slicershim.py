"""Test harness only: what Slicer's Qt application gives a scripted module, for importing
``PolyCLSegment.py`` on slicer-core under pytest (:mod:`slicer_harness`). No product code uses it:
the web page runs the Qt-free Logic (``PolyCLSegmentLib.logic.PolyCLLogic``) directly.

slicer-core (the PyPI wheel) has real MRML, the Segmentations/Volumes/Markups logics and ``slicer.util``,
but no Qt: ``import qt``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` and
``slicer.i18n`` do not exist. :func:`install` provides exactly the names ``PolyCLSegment.py`` imports at
its top, each with a defined behaviour (no object that accepts and ignores any call):

* ``qt``: ``qt.Qt.ToolTipRole`` (Qt's enum value, 3) and ``qt.QTimer``, which raises
  :class:`NoQtError` when made: timers belong to the panel (the Widget), which cannot run without
  Qt. Any other ``qt.X`` raises ``AttributeError`` naming this module;
* ``slicer.ScriptedLoadableModule``: Qt-free base classes (the Logic's ``getParameterNode`` makes
  the module's singleton ``vtkMRMLScriptedModuleNode`` in ``slicer.mrmlScene``; the Widget base
  raises :class:`NoQtError`);
* ``slicer.parameterNodeWrapper``: ``parameterNodeWrapper`` makes a plain class whose attributes
  are the annotated defaults (values are not stored in the node); ``WithinRange`` and the other
  validators are accepted and not enforced; ``Annotated[T, ...]`` is ``T``;
* ``slicer.i18n``: ``tr`` and ``translate`` return the text unchanged (no translations);
* ``slicer.app``: ``None`` (as ``slicer.util`` expects outside the application).

"""

from __future__ import annotations

import sys
import types
import unittest
from types import SimpleNamespace


class NoQtError(RuntimeError):
    """A Qt widget or timer was asked for where there is no Qt application."""


class _QtModule(types.ModuleType):
    """``qt`` without Qt: the two names the module's file refers to."""

    def __getattr__(self, name):
        raise AttributeError(f"qt.{name}: not available without Slicer's Qt application "
                             "(PolyCLSegmentWeb.slicershim provides only what the module's Logic needs)")


class QTimer:
    """Refuses to exist: timers drive the panel, which has no Qt here."""

    def __init__(self, *args, **kwargs):
        raise NoQtError("qt.QTimer: no Qt application (the panel cannot run here)")


def qtModule() -> types.ModuleType:
    qt = _QtModule("qt")
    qt.Qt = SimpleNamespace(ToolTipRole=3)  # Qt::ToolTipRole
    qt.QTimer = QTimer
    return qt


def scriptedLoadableModule() -> types.ModuleType:
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
            raise NoQtError(f"{self.moduleName}: the panel needs Slicer's Qt application")

        def cleanup(self):
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            name = self.__class__.__name__
            self.moduleName = name[: -len("Logic")] if name.endswith("Logic") else ""

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


def parameterNodeWrapperModule() -> types.ModuleType:
    """``parameterNodeWrapper`` (a plain class with the annotated defaults) and its validators (accepted)."""
    mod = types.ModuleType("slicer.parameterNodeWrapper")

    def parameterNodeWrapper(cls):
        def __init__(self, node=None):
            self.parameterNode = node
            for name in getattr(cls, "__annotations__", {}):
                if hasattr(cls, name):
                    setattr(self, name, getattr(cls, name))

        cls.__init__ = __init__
        return cls

    class Annotated:
        def __class_getitem__(cls, item):
            return item[0] if isinstance(item, tuple) else item

    def validator(*args, **kwargs):
        return None

    mod.parameterNodeWrapper = parameterNodeWrapper
    mod.parameterPack = parameterNodeWrapper
    for name in ("WithinRange", "Minimum", "Maximum", "Default", "Choice", "Decimals", "SingleStep"):
        setattr(mod, name, validator)
    mod.Annotated = Annotated
    return mod


def i18nModule() -> types.ModuleType:
    mod = types.ModuleType("slicer.i18n")
    mod.tr = lambda text: text
    mod.translate = lambda context, text: text
    return mod


def install(qt: types.ModuleType | None = None) -> None:
    """Register the stand-ins in ``sys.modules`` and on ``slicer``; idempotent. ``qt``: another stand-in
    for ``qt`` (kept if one is installed already)."""
    import slicer

    sys.modules.setdefault("qt", qt if qt is not None else qtModule())
    for name, make in (("ScriptedLoadableModule", scriptedLoadableModule),
                       ("parameterNodeWrapper", parameterNodeWrapperModule), ("i18n", i18nModule)):
        full = f"slicer.{name}"
        if full not in sys.modules:
            sys.modules[full] = make()
        setattr(slicer, name, sys.modules[full])
    if not hasattr(slicer, "app"):
        slicer.app = None
