"""The red (axial) view: its slice, and the mouse tools drawn on it (Refine's box, Interact's prompts).

Mouse events are observed on the red view's interactor before Slicer's interactor style, so that in a
tool's mode a left-button press, drag and release make a prompt instead of panning, painting or
window/level (``polycl_tool``):

* ``refine-box``: a drag draws an ROI markup one slice thick: Refine's box prompt;
* ``include`` / ``exclude``: a click is an include (exclude with Shift, or in ``exclude``) point, a drag is
  a box prompt; ``box``: a drag is a box prompt. Each prompt goes to the page's prompt tools
  (:attr:`PolyCLWebApp.promptTools`), which answers it on that slice at once;
* no tool and no Segment Editor effect: a drag is window/level, as in Slicer (right widens the window,
  up raises the level; the controller's ``dragWindowLevel``).

Geometry: RAS millimetres from the slice node's XY-to-RAS matrix (``slicer.util.arrayFromVTKMatrix``);
voxels and the slice under the view through the module's controller (one place for both front ends).
"""

from __future__ import annotations

import numpy as np

#: Drags shorter than this (mm, in the slice's plane) are clicks.
CLICK_MM = 2.0
PROMPT_TOOLS = ("include", "exclude", "box")


def _matrix(vtkMatrix) -> np.ndarray:
    import slicer

    return slicer.util.arrayFromVTKMatrix(vtkMatrix)


class RedView:
    """The red slice view of ``app`` and the volume shown in it."""

    def __init__(self, app):
        self.app = app

    def sliceNode(self):
        view = self.app.slicerApp.view_manager.get_view("Red")
        return view.get_view_node() if view is not None else None

    @property
    def controller(self):
        return self.app.controller

    def sliceIndex(self) -> int:
        """The volume's slice index k under the red view (the controller's lookup)."""
        return self.controller.sliceIndexOfView(self.app.volumeNode, self.sliceNode())

    def goToSlice(self, k: int) -> int:
        dims = self.app.volumeNode.GetImageData().GetDimensions()
        k = max(0, min(int(k), dims[2] - 1))
        self.sliceNode().JumpSliceByOffsetting(*self.controller.sliceCenterRas(self.app.volumeNode, k))
        return k

    def eventRas(self, interactor) -> np.ndarray:
        x, y = interactor.GetEventPosition()
        return (_matrix(self.sliceNode().GetXYToRAS()) @ np.array([x, y, 0.0, 1.0]))[:3]

    def viewPoints(self, ijk) -> dict:
        """Normalised positions (u right, v down, 0..1) in the red view of IJK points, and the slice k."""
        rasToXy = np.linalg.inv(_matrix(self.sliceNode().GetXYToRAS()))
        w, h, _ = self.sliceNode().GetDimensions()
        pts = []
        for i, j, k in ijk:
            xy = rasToXy @ np.append(self.controller.rasOfVoxel(self.app.volumeNode, (k, j, i)), 1.0)
            pts.append([float(xy[0] / w), float(1.0 - xy[1] / h)])
        return {"k": self.sliceIndex(), "size": [w, h], "points": pts}

    def render(self):
        for view in self.app.slicerApp.view_manager.get_views():
            view.schedule_render()


class MouseTools:
    """Refine's box and Interact's prompts, drawn with the left button on the red view."""

    def __init__(self, app):
        self.app = app
        self.red = app.red
        self.boxNode = None  # the ROI markup being drawn, or Refine's box once drawn
        self._start = None
        self._shift = False
        self._windowFrom = None  # the last event position of a window/level drag
        self._tags: dict = {}

    @property
    def state(self):
        return self.app.state

    def install(self):
        import vtk

        interactor = self.app.slicerApp.view_manager.get_view("Red").interactor()
        for event, handler in ((vtk.vtkCommand.LeftButtonPressEvent, self._press),
                               (vtk.vtkCommand.MouseMoveEvent, self._move),
                               (vtk.vtkCommand.LeftButtonReleaseEvent, self._release)):
            self._tags[event] = interactor.AddObserver(event, handler, 100.0)

    def _swallow(self, interactor, event: str):
        import vtk

        tag = self._tags.get(vtk.vtkCommand.GetEventIdFromString(event))
        if tag is not None:
            interactor.GetCommand(tag).SetAbortFlag(1)

    def _active(self) -> bool:
        return bool(self.state.polycl_tool) and self.app.volumeNode is not None and not self.app.controller.busy

    def _windowLevelMode(self) -> bool:
        """No tool and no editor effect: a left drag adjusts the CT's window/level."""
        if self.state.polycl_tool or self.app.volumeNode is None or self.app.controller.busy:
            return False
        effect = self.app.editor.active_effect
        return effect is None or type(effect).__name__ == "SegmentationEffectNoTool"

    def _press(self, interactor, event):
        self._windowFrom = None  # a drag whose release never came (it ended outside the view) is over
        if not self._active():
            if self._windowLevelMode():
                self._swallow(interactor, event)
                self._windowFrom = interactor.GetEventPosition()
            return
        self._swallow(interactor, event)
        self._start = self.red.eventRas(interactor)
        self._shift = bool(interactor.GetShiftKey())

    def _move(self, interactor, event):
        if self._windowFrom is not None and self._start is None:
            self._swallow(interactor, event)
            x, y = interactor.GetEventPosition()
            (x0, y0), self._windowFrom = self._windowFrom, (x, y)
            self.app.controller.dragWindowLevel(self.app.volumeNode, x - x0, -(y - y0))  # VTK's y points up
            return
        if self._start is None:
            return
        self._swallow(interactor, event)
        self.setBox(self._start, self.red.eventRas(interactor))

    def _release(self, interactor, event):
        if self._windowFrom is not None and self._start is None:
            self._swallow(interactor, event)
            self._windowFrom = None
            return
        self._windowFrom = None
        if self._start is None:
            return
        self._swallow(interactor, event)
        start, self._start = self._start, None
        end = self.red.eventRas(interactor)
        tool = self.state.polycl_tool
        dragged = float(np.linalg.norm(np.asarray(end) - np.asarray(start))) >= CLICK_MM
        if tool in PROMPT_TOOLS:
            self.removeBox()
            if dragged:
                return self.app.promptTools.box(start, end)
            if tool == "box":
                return self.app.say(error="drag a rectangle around the organ")
            return self.app.promptTools.point(end, include=(tool == "include" and not self._shift))
        size = self.setBox(start, end)
        if min(size[:2]) < CLICK_MM:
            self.removeBox()
            return self.app.say(error="drag a rectangle around the organ (the box was too small)")
        with self.state:
            self.state.polycl_tool = ""
            self.state.polycl_has_box = True
        self.app.say(f"Box drawn on slice {self.red.sliceIndex()} ({size[0]:.0f} x {size[1]:.0f} mm): click Refine "
                     "(SAM inside the box; with a segment selected, also automatic boxes from it).")

    def hasBox(self) -> bool:
        return self.boxNode is not None and self.app.slicerApp.scene.IsNodePresent(self.boxNode)

    def setBox(self, a, b):
        """Make or move the ROI: the rectangle a-b (RAS mm) in the red slice's plane, one voxel thick, centred
        on the volume's slice under the view (so that its box prompt lands on exactly that slice).
        Returns its in-plane size and thickness (mm)."""
        volume, k = self.app.volumeNode, self.red.sliceIndex()
        onSlice = self.app.controller.rasOfVoxel(volume, (k, 0, 0))
        normal = self.app.controller.rasOfVoxel(volume, (k + 1, 0, 0)) - onSlice
        axis = int(np.argmax(np.abs(normal)))  # the RAS axis across the slices (axial: S)
        thickness = float(np.linalg.norm(normal))
        centre = (np.asarray(a) + np.asarray(b)) / 2.0
        size = np.abs(np.asarray(b) - np.asarray(a))
        centre[axis], size[axis] = onSlice[axis], thickness
        if not self.hasBox():
            self.boxNode = self.app.slicerApp.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
            self.boxNode.CreateDefaultDisplayNodes()
            self.boxNode.SetLocked(True)  # moved only by drawing it again (its handles would catch Paint's drags)
            display = self.boxNode.GetDisplayNode()
            if display is not None:
                display.SetSelectedColor(1.0, 0.85, 0.1)
                display.SetColor(1.0, 0.85, 0.1)
                display.SetFillOpacity(0.1)
                display.SetHandlesInteractive(False)
        self.boxNode.SetCenter(*[float(c) for c in centre])
        self.boxNode.SetSize(*[float(v) for v in size])
        self.red.render()
        return [float(size[i]) for i in range(3) if i != axis] + [thickness]

    def removeBox(self):
        scene = self.app.slicerApp.scene
        if self.boxNode is not None and scene.IsNodePresent(self.boxNode):
            scene.RemoveNode(self.boxNode)
        self.boxNode, self._start = None, None
        with self.state:
            self.state.polycl_has_box = False

    # ---------------------------------------------------------------- buttons
    def onBoxTool(self):
        if self.app.volumeNode is None:
            return self.app.say(error="load a CT first")
        on = self.state.polycl_tool != "refine-box"
        if on:
            self.app.editor.deactivate_effect()
        with self.state:
            self.state.polycl_tool = "refine-box" if on else ""
        self.app.say("Box: drag a rectangle around the organ on the red view, then click Refine." if on
                     else "Box tool off.")

    def onClearBox(self):
        self.removeBox()
        self.red.render()
        self.app.say("Box removed.")
