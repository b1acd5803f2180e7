"""When a propagation direction ends: the organ has vanished for K consecutive slices.

A slice's mask counts as *vanished* when it is empty, or (each check optional) when it is
implausible as the continuation of the organ:

* smaller than ``min_area_mm2``, or than ``min_area_fraction`` of the seed's area (an organ's tip
  runs on into a thin neighbour: the interactive fill uses 5 %);
* ``max_growth`` times larger than the last accepted slice (a leak into a neighbouring organ);
* a confidence below ``min_quality`` (SAM's predicted quality / object score);
* a mean HU inside the mask more than ``hu_tolerance`` HU away from the seed's.

A vanished slice is reported as empty. After ``stop_after`` vanished slices in a row the direction
ends; ``stop_after=None`` (or 0) never ends it early: it runs to the volume's (or the given) limits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class StopRule:
    stop_after: int | None = 3
    min_area_mm2: float = 0.0
    max_growth: float | None = None
    min_quality: float | None = None
    hu_tolerance: float | None = None
    min_area_fraction: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def tracker(self, seed_mask: np.ndarray, seed_hu: np.ndarray | None = None,
                pixel_area_mm2: float = 1.0) -> "DirectionTracker":
        return DirectionTracker(self, seed_mask, seed_hu, pixel_area_mm2)


class DirectionTracker:
    """State of one direction: the last accepted area, the run of vanished slices, why it stopped."""

    def __init__(self, rule: StopRule, seed_mask: np.ndarray, seed_hu: np.ndarray | None,
                 pixel_area_mm2: float) -> None:
        self.rule = rule
        self.pixel_area = float(pixel_area_mm2)
        self.last_area = float(np.count_nonzero(seed_mask))
        self.seed_area = self.last_area
        self.seed_mean_hu = (float(seed_hu[seed_mask > 0].mean())
                             if seed_hu is not None and np.any(seed_mask) else None)
        self.run = 0
        self.stopped = False
        self.reason = ""  # why the last slice was rejected, or why the direction stopped

    def vanished_reason(self, mask: np.ndarray, hu: np.ndarray | None, confidence: float | None) -> str:
        area = float(np.count_nonzero(mask))
        r = self.rule
        if area == 0:
            return "empty"
        if area * self.pixel_area < r.min_area_mm2:
            return f"area {area * self.pixel_area:.0f} mm2 < {r.min_area_mm2:g}"
        if r.min_area_fraction and area < r.min_area_fraction * self.seed_area:
            return f"area {area:.0f} px < {r.min_area_fraction:g} of the seed's {self.seed_area:.0f}"
        if r.max_growth and self.last_area > 0 and area > r.max_growth * self.last_area:
            return f"area jumped x{area / self.last_area:.2f} (> x{r.max_growth:g})"
        if r.min_quality is not None and confidence is not None and confidence < r.min_quality:
            return f"confidence {confidence:.2f} < {r.min_quality:g}"
        if r.hu_tolerance is not None and hu is not None and self.seed_mean_hu is not None:
            mean = float(hu[mask > 0].mean())
            if abs(mean - self.seed_mean_hu) > r.hu_tolerance:
                return f"mean HU {mean:.0f} vs seed {self.seed_mean_hu:.0f} (> {r.hu_tolerance:g} apart)"
        return ""

    def check(self, mask: np.ndarray, hu: np.ndarray | None = None,
              confidence: float | None = None) -> tuple[np.ndarray, bool]:
        """Return (mask to report, stop now). A vanished slice's mask is reported empty."""
        reason = self.vanished_reason(mask, hu, confidence)
        if reason:
            self.run += 1
            self.reason = reason
            mask = np.zeros_like(mask)
        else:
            self.run = 0
            self.last_area = float(np.count_nonzero(mask))
        k = self.rule.stop_after
        if k and self.run >= k:
            self.stopped = True
            self.reason = f"vanished for {self.run} slices (last: {reason})"
        return mask, self.stopped
