"""The page's view and segment actions: CT window presets and window/level, the segment list (show,
lock, delete, next segment), keyboard shortcuts and the 3D view's surfaces. Each is a call of the
module's controller (the Slicer panel makes the same calls); this class only moves the page's state.
"""

from __future__ import annotations


class ViewAndSegments:
    """What :mod:`.ui`'s "View and segments" section, the keys and the 3D view do for ``app``."""

    #: key -> the Interact tool it selects
    TOOL_KEYS = {"i": "include", "e": "exclude", "b": "box", "Escape": ""}

    def __init__(self, app):
        self.app = app
        self.fitted3d = False  # the 3D camera was fitted to the segments of the loaded CT

    def onWindowModified(self, *_):
        if self.app.volumeNode is None or self.app.volumeNode.GetDisplayNode() is None:
            return
        window, level = self.app.controller.windowLevel(self.app.volumeNode)
        with self.app.state:
            self.app.state.polycl_window, self.app.state.polycl_level = round(window), round(level)

    def onPreset(self, name: str):
        if self.app.volumeNode is None:
            return self.app.say(error="load a CT first")
        window, level = self.app.controller.applyWindowPreset(self.app.volumeNode, name)
        self.onWindowModified()
        self.app.refresh()
        self.app.say(f"Window {name}: W {window:.0f} / L {level:.0f} HU.")

    def _segmentAction(self, call, message: str = ""):
        """A segment-list action through the controller; a refusal is shown and changes nothing."""
        if self.app.volumeNode is None or self.app.segmentationNode is None:
            return self.app.say(error="load a CT first")
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - the module's message
            return self.app.say(error=str(exc))
        self.app.refresh()
        self.app.say(message)
        return result

    def onSelectSegment(self, segmentId: str):
        self.app.editor.set_active_segment_id(segmentId)
        self.app.say()

    def onSegmentVisible(self, segmentId: str, visible: bool):
        self._segmentAction(lambda: self.app.controller.setSegmentVisible(self.app.segmentationNode, segmentId, visible))

    def onSegmentLocked(self, segmentId: str, locked: bool):
        self._segmentAction(lambda: self.app.controller.setSegmentLocked(self.app.segmentationNode, segmentId, locked),
                            "Locked: no operation changes it." if locked else "Unlocked.")

    def onSegmentDelete(self, segmentId: str):
        self._segmentAction(lambda: self.app.controller.deleteSegment(self.app.segmentationNode, segmentId),
                            "Segment deleted (Undo brings it back).")

    def onNextSegment(self):
        new = self._segmentAction(lambda: self.app.controller.nextSegment(self.app.segmentationNode))
        if new:
            self.app.editor.set_active_segment_id(new)
            self.app.say("New segment: prompt or paint it.")

    def onKey(self, key: str, ctrl: bool = False, shift: bool = False):
        """A keyboard shortcut (the page lists them): tools, undo, slice up/down, next segment."""
        if self.app.volumeNode is None:
            return
        if ctrl and key.lower() == "z":
            return self.app.onUndo()
        if key in self.TOOL_KEYS and not self.app.controller.busy:
            with self.app.state:
                self.app.state.polycl_tool = self.TOOL_KEYS[key]
        elif key in ("ArrowUp", "PageUp", "ArrowDown", "PageDown"):
            self.app.goToSlice(self.app.red.sliceIndex() + (1 if key in ("ArrowUp", "PageUp") else -1))
        elif key == "n" and not self.app.controller.busy:
            self.onNextSegment()

    def show3d(self):
        """The segments as smoothed surfaces in the 3D view: the segmentation's closed-surface
        representation (Slicer's, made from the labelmap), rendered again after every change; the
        camera is fitted once, when the first segment with voxels appears after a load (a view the
        user turned afterwards stays as it is)."""
        seg = self.app.segmentationNode
        if self.app.volumeNode is None or seg is None or not self.app.controller.segments(seg):
            return
        seg.CreateClosedSurfaceRepresentation()
        drawn = any((surface := seg.GetClosedSurfaceInternalRepresentation(row["id"])) is not None
                    and surface.GetNumberOfPoints() > 0 for row in self.app.controller.segments(seg))
        fit = drawn and not self.fitted3d
        for view in self.app.slicerApp.view_manager.get_threed_views():
            if fit:
                view.reset_camera()
            view.schedule_render()
        self.fitted3d = self.fitted3d or drawn
