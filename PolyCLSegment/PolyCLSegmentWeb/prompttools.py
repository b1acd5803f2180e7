"""The page's prompt tools: the toolbar's prompts on the red view, each one call of the controller.

Include / exclude points and boxes (:class:`PolyCLSegmentWeb.redview.MouseTools` turns clicks and drags
into RAS positions), "Correct slice" (the slice as painted becomes a fixed slice), "Propagate from
clicks", Clear prompts and Finish segment go to the controller's ``addPoint``, ``addBox``,
``correctSlice``, ``propagateFromClicks``, ``clearPrompts`` and ``finishSegment``; the controller keeps
the prompts as markups (include points green, exclude points red, boxes yellow), which the page's views
show, and answers each on its slice with one undo step. Prompts go to the selected segment; with none
selected, a new empty segment "prompted" is made for them.

With "propagate from clicks" on (the default), the controller fills the volume after the first include
click on an empty segment, and re-propagates locally after a prompt or correction on a filled volume.
"""

from __future__ import annotations


class PromptTools:
    """What the page's prompt buttons and the red view's mouse tools call (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    @property
    def controller(self):
        return self.app.controller

    def _segment(self) -> str:
        """The selected segment's ID (a new empty one when none is selected)."""
        editor = self.app.editor
        if not editor.active_segment_id:
            editor.add_empty_segment(segment_name="prompted", segment_color=[0.95, 0.6, 0.2])
        return editor.active_segment_id

    def _prompt(self, name: str, ask):
        """Run ``ask(volumeNode, segmentationNode, segmentId, onDone)`` on the selected segment."""
        if self.app.volumeNode is None:
            return self.app.say(error="load a CT first")
        app = self.app
        app.run(name, lambda: ask(app.volumeNode, app.segmentationNode, self._segment(), app.selectSegment))

    def point(self, ras, include: bool = True):
        self._prompt("Include click" if include else "Exclude click", lambda volume, seg, segId, done:
                     self.controller.addPoint(volume, seg, segId, ras, include, onDone=done))

    def box(self, a, b):
        self._prompt("Box prompt", lambda volume, seg, segId, done:
                     self.controller.addBox(volume, seg, segId, a, b, onDone=done))

    def correct(self):
        """The red view's slice of the selected segment, as painted, becomes a fixed slice."""
        self._prompt("Correct slice", lambda volume, seg, segId, done: self.controller.correctSlice(
            volume, seg, segId, self.app.red.sliceIndex(), onDone=done))

    def propagate(self):
        self._prompt("Propagate from clicks", lambda volume, seg, segId, done: self.controller.propagateFromClicks(
            volume, seg, segId, onDone=done))

    def clear(self):
        self.controller.clearPrompts(self.app.segmentationNode, self.app.editor.active_segment_id or None)
        self.app.refresh()
        self.app.say("Prompts cleared (the segment keeps its voxels).")

    def finish(self):
        self.controller.finishSegment(self.app.segmentationNode, self.app.editor.active_segment_id or None)
        self.app.refresh()
        self.app.say("Segment finished: prompts removed.")

    def reset(self):
        """A new CT: every prompt session ends (one whose segmentation is gone already just ends)."""
        try:
            self.controller.resetPrompts()
        except Exception as exc:  # noqa: BLE001 - nothing left to write to
            self.app.say(error=f"prompts dropped: {exc}")
