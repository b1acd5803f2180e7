"""How a CT and its segments are shown, the same in the Slicer panel and the web page.

* Window presets (HU), as radiologists read abdominal CT; ``abdomen``, ``bone`` and ``lung`` are
  Slicer's own CT presets (Volumes module: CT-Abdomen W 350 / L 40, CT-Bone W 1000 / L 400, CT-Lung
  W 1400 / L -500), ``liver`` the usual narrow liver window (W 150 / L 30) that separates lesions and
  vessels from the parenchyma.
* The segments of a segmentation as a list a front end draws: colour, name, visibility, lock.

Nothing here needs Qt: MRML nodes only.
"""

from __future__ import annotations

#: preset name -> (window, level) in HU, in the order a front end offers them.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "abdomen": (350.0, 40.0),
    "liver": (150.0, 30.0),
    "bone": (1000.0, 400.0),
    "lung": (1400.0, -500.0),
}
#: Window/level by dragging: HU per screen pixel of mouse movement.
DRAG_HU_PER_PIXEL = 2.0


def windowLevel(volumeNode) -> tuple[float, float]:
    """(window, level) in HU the volume is shown with."""
    display = volumeNode.GetDisplayNode()
    return float(display.GetWindow()), float(display.GetLevel())


def setWindowLevel(volumeNode, window: float, level: float) -> tuple[float, float]:
    """Show the volume with ``window`` (at least 1 HU) and ``level`` (HU); auto window/level off."""
    display = volumeNode.GetDisplayNode()
    if display is None:
        volumeNode.CreateDefaultDisplayNodes()
        display = volumeNode.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(max(1.0, float(window)), float(level))
    return windowLevel(volumeNode)


def applyPreset(volumeNode, name: str) -> tuple[float, float]:
    """Show the volume with the preset ``name`` (:data:`WINDOW_PRESETS`)."""
    from polycl.errors import InputError

    if name not in WINDOW_PRESETS:
        raise InputError(f"unknown window preset '{name}'; presets: {', '.join(WINDOW_PRESETS)}")
    return setWindowLevel(volumeNode, *WINDOW_PRESETS[name])


def dragWindowLevel(volumeNode, dx: float, dy: float) -> tuple[float, float]:
    """Window/level by dragging, as in Slicer: right widens the window, up raises the level (``dx``,
    ``dy`` in screen pixels, y down)."""
    window, level = windowLevel(volumeNode)
    return setWindowLevel(volumeNode, window + DRAG_HU_PER_PIXEL * dx, level - DRAG_HU_PER_PIXEL * dy)


def segmentRows(segmentationNode) -> list[dict]:
    """One dict per segment, in the segmentation's order: ``id``, ``name``, ``color`` (#rrggbb),
    ``visible``, ``locked``."""
    from PolyCLSegmentLib.segmentedit import isSegmentLocked, segmentIds

    if segmentationNode is None:
        return []
    segmentation = segmentationNode.GetSegmentation()
    display = segmentationNode.GetDisplayNode()
    rows = []
    for segId in segmentIds(segmentationNode):
        segment = segmentation.GetSegment(segId)
        r, g, b = (int(round(255 * c)) for c in segment.GetColor())
        rows.append({"id": segId, "name": segment.GetName(), "color": f"#{r:02x}{g:02x}{b:02x}",
                     "visible": bool(display.GetSegmentVisibility(segId)) if display is not None else True,
                     "locked": isSegmentLocked(segment)})
    return rows
