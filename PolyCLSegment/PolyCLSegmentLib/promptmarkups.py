"""Prompts as markups the user sees, moves and deletes in the slice views (see :mod:`PolyCLSegmentLib.promptanswers`).

Points live in two ``vtkMRMLMarkupsFiducialNode`` per segment ("include", green; "exclude", red),
boxes in ``vtkMRMLMarkupsROINode``. Observers on the point nodes turn a point placed, dragged or
deleted by the user into ``addPoint`` / ``movePrompt`` / ``removePrompt`` of the
:class:`~PolyCLSegmentLib.promptanswers.PromptAnswers` that inherits :class:`PromptMarkups`; changes
made here are flagged ``_quiet`` so that they are not taken for user actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

INCLUDE_COLOR = (0.2, 0.85, 0.3)
EXCLUDE_COLOR = (0.95, 0.25, 0.2)
BOX_COLOR = (1.0, 0.85, 0.1)


@dataclass
class Prompt:
    """One prompt: ``kind`` "include", "exclude" or "box"; the markup node and control point
    (points) that show it; ``sessionId``: the InteractiveSession's id of the prompt."""

    id: str
    kind: str
    key: tuple[str, str]
    nodeId: str
    pointId: str | None = None
    sessionId: Any = None
    ras: tuple = ()  # where the markup is (RAS mm)
    ras1: tuple = ()  # a box's second corner (RAS mm)


class PromptMarkups:
    """The markup half of :class:`~PolyCLSegmentLib.promptanswers.PromptAnswers` (it provides ``targets``,
    ``prompts``, ``_target``, ``_nodes``, ``_observed``, ``_quiet`` and the prompt operations)."""

    def pointNode(self, volumeNode, segmentationNode, segmentId: str, include: bool):
        """The fiducial node holding the include (or exclude) points of a segment (made on first use);
        a front end makes it the active place list for its include/exclude place mode: each point
        placed on it is then a prompt on ``volumeNode``."""
        import slicer

        target = self._target(volumeNode, segmentationNode, segmentId)
        kind = "include" if include else "exclude"
        node = slicer.mrmlScene.GetNodeByID(target.nodeIds.get(kind, ""))
        if node is not None:
            return node
        name = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{name} {kind}")
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is not None:
            display.SetSelectedColor(*(INCLUDE_COLOR if include else EXCLUDE_COLOR))
            display.SetColor(*(INCLUDE_COLOR if include else EXCLUDE_COLOR))
        node.SetAttribute("PolyCL.PromptKind", kind)
        node.SetAttribute("PolyCL.Segment", f"{target.segmentationNodeId}|{segmentId}")
        target.nodeIds[kind] = node.GetID()
        self._observe(node)
        return node

    def _observe(self, node) -> None:
        for event, handler in ((node.PointPositionDefinedEvent, self._onPlaced),
                               (node.PointEndInteractionEvent, self._onMoved),
                               (node.PointRemovedEvent, self._onRemoved)):
            self._observed.append((node, node.AddObserver(event, handler)))

    # (Python observers do not get the event's control point index: the handlers find the point)
    def _known(self, node) -> dict[str, Prompt]:
        return {p.pointId: p for p in self.prompts.values() if p.nodeId == node.GetID()}

    def _onPlaced(self, node, event=None) -> None:
        """A point placed in a slice view (place mode on this node) becomes an include/exclude prompt."""
        if self._quiet:
            return
        known = self._known(node)
        segNodeId, segmentId = node.GetAttribute("PolyCL.Segment").split("|", 1)
        volumeNode, segmentationNode = self._nodes(self.targets[(segNodeId, segmentId)])
        for i in range(node.GetNumberOfControlPoints()):
            pid = node.GetNthControlPointID(i)
            if pid not in known and node.GetNthControlPointPositionStatus(i) == node.PositionDefined:
                self.addPoint(volumeNode, segmentationNode, segmentId, node.GetNthControlPointPositionWorld(i),
                              node.GetAttribute("PolyCL.PromptKind") == "include", pointId=pid)

    def _onMoved(self, node, event=None) -> None:
        """A point dragged to a new place: its slice is answered again."""
        if self._quiet:
            return
        for pid, prompt in self._known(node).items():
            ras = node.GetNthControlPointPositionWorld(node.GetNthControlPointIndexByID(pid))
            if not np.allclose(ras, prompt.ras):
                self.movePrompt(prompt.id, ras)

    def _onRemoved(self, node, event=None) -> None:
        """A point deleted by the user: its answer goes."""
        if self._quiet:
            return
        present = {node.GetNthControlPointID(i) for i in range(node.GetNumberOfControlPoints())}
        for pid, prompt in self._known(node).items():
            if pid not in present:
                self.removePrompt(prompt.id)

    def _removeMarkup(self, prompt: Prompt) -> None:
        import slicer

        node = slicer.mrmlScene.GetNodeByID(prompt.nodeId)
        if node is None:
            return
        self._quiet = True
        try:
            if prompt.kind == "box":
                slicer.mrmlScene.RemoveNode(node)
            else:
                index = node.GetNthControlPointIndexByID(prompt.pointId)
                if index >= 0:
                    node.RemoveNthControlPoint(index)
        finally:
            self._quiet = False

    def _newBoxNode(self, ras0, ras1) -> str:
        """A new ROI node showing the box between two RAS corners (mm); returns its ID."""
        import slicer

        self._quiet = True
        try:
            roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "PolyCL box")
            roi.CreateDefaultDisplayNodes()
            lo, hi = np.minimum(ras0[:3], ras1[:3]), np.maximum(ras0[:3], ras1[:3])
            roi.SetCenter(*((lo + hi) / 2))
            roi.SetSize(*np.maximum(hi - lo, 1.0))
            if roi.GetDisplayNode() is not None:
                roi.GetDisplayNode().SetSelectedColor(*BOX_COLOR)
        finally:
            self._quiet = False
        return roi.GetID()

    def _restoreMarkup(self, prompt: Prompt) -> None:
        """Show a removed prompt again (undo of its removal): a box gets a new ROI node, a point is
        placed anew on its node (its ID is updated)."""
        import slicer

        if prompt.kind == "box":
            prompt.nodeId = self._newBoxNode(np.asarray(prompt.ras), np.asarray(prompt.ras1))
            return
        node = slicer.mrmlScene.GetNodeByID(prompt.nodeId)
        if node is None:
            return
        self._quiet = True
        try:
            prompt.pointId = node.GetNthControlPointID(node.AddControlPointWorld(*[float(v) for v in prompt.ras[:3]]))
        finally:
            self._quiet = False

    def _setMarkup(self, prompt: Prompt, ras, ras1=None) -> None:
        import slicer

        node = slicer.mrmlScene.GetNodeByID(prompt.nodeId)
        if node is None:
            return
        self._quiet = True
        try:
            if prompt.kind == "box" and ras1 is not None:
                lo, hi = np.minimum(ras[:3], ras1[:3]), np.maximum(ras[:3], ras1[:3])
                node.SetCenter(*((lo + hi) / 2))
                node.SetSize(*np.maximum(hi - lo, 1.0))
            elif prompt.kind != "box":
                index = node.GetNthControlPointIndexByID(prompt.pointId)
                node.SetNthControlPointPositionWorld(index, *[float(v) for v in ras[:3]])
        finally:
            self._quiet = False
