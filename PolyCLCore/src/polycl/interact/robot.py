"""The field's simulated user ("robot user") that measures interactive segmentation.

The standard protocol (nnInteractive, the SAM-family papers, the CVPR 2025 interactive challenge):

1. the first include click at the centre (largest in-plane distance-transform value, in mm) of
   the organ's largest axial slice, one click per object (each 3D connected component of the
   reference: two kidneys take two clicks), then the volume is filled by propagation;
2. each next click at the centre of the largest error region (a 2D connected region of misses or
   leaks) on the axial slice with the most wrong voxels: an include click for a miss, an exclude
   click for a leak; the session re-propagates locally after every click;
3. 3D Dice after every click; NoC90 / NoC95 = clicks needed to reach Dice 0.90 / 0.95, capped at
   ``max_clicks`` (the cap is reported when the target is never reached). The run stops once
   Dice 0.95 is reached (the curve stays at its last value from there) or at ``max_clicks``.

All choices are made in canonical (LPS) slice space; the clicks are handed to the session as
voxel indices of the input array, as a front end would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from polycl.errors import InputError
from polycl.progress import CancelToken, Progress, Reporter

#: 3D components of the reference smaller than this fraction of the largest are not objects.
MIN_OBJECT_FRACTION = 0.1


def dice3d(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


@dataclass
class RobotResult:
    """Dice after each click (``dice[i]`` after click i + 1), seconds per click (slice answer plus
    re-propagation), the clicks themselves (input (z, y, x), kind), and the NoC values."""

    dice: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    answer_seconds: list[float] = field(default_factory=list)
    clicks: list[dict] = field(default_factory=list)
    max_clicks: int = 20

    def noc(self, target: float) -> int:
        """Clicks to reach Dice ``target``; ``max_clicks`` when never reached."""
        for i, d in enumerate(self.dice):
            if d >= target:
                return i + 1
        return self.max_clicks

    def dice_at(self, n: int) -> float:
        """Dice after ``n`` clicks (the last value when the run stopped earlier)."""
        if not self.dice:
            return 0.0
        return self.dice[min(n, len(self.dice)) - 1]

    @property
    def seconds_per_click(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else 0.0

    def curve(self) -> list[float]:
        """Dice after clicks 1..max_clicks (the last value repeated after the run stopped)."""
        return [self.dice_at(n) for n in range(1, self.max_clicks + 1)]

    def summary(self) -> str:
        return (f"NoC90={self.noc(0.90)} NoC95={self.noc(0.95)} dice@1={self.dice_at(1):.3f} "
                f"dice@5={self.dice_at(5):.3f} seconds_per_click={self.seconds_per_click:.2f}")


def centre(mask2d: np.ndarray, pixel_mm: tuple[float, float]) -> tuple[int, int]:
    """(y, x) of the largest distance-transform value (mm) inside a 2D mask."""
    edt = ndimage.distance_transform_edt(np.pad(mask2d, 1), sampling=pixel_mm)[1:-1, 1:-1]
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(edt)), edt.shape))


def first_clicks(gt: np.ndarray, pixel_mm) -> list[tuple[int, int, int]]:
    """One canonical (z, y, x) per object of ``gt``: the centre of the object's largest slice."""
    lab, n = ndimage.label(gt > 0, structure=np.ones((3, 3, 3)))
    if n == 0:
        raise InputError("the reference mask is empty: nothing to segment")
    sizes = np.bincount(lab.ravel())[1:]
    clicks = []
    for i in np.argsort(sizes)[::-1]:
        if sizes[i] < MIN_OBJECT_FRACTION * sizes.max():
            break
        comp = lab == i + 1
        z = int(np.argmax(comp.reshape(comp.shape[0], -1).sum(axis=1)))
        clicks.append((z, *centre(comp[z], pixel_mm)))
    return clicks


def next_click(pred: np.ndarray, gt: np.ndarray, pixel_mm) -> tuple[tuple[int, int, int], bool] | None:
    """The next canonical (z, y, x) click and whether it includes (a miss) or excludes (a leak);
    None when the prediction is perfect."""
    err = (pred > 0) != (gt > 0)
    per_slice = err.reshape(err.shape[0], -1).sum(axis=1)
    if per_slice.max() == 0:
        return None
    z = int(np.argmax(per_slice))
    best = None
    for include, region in ((True, (gt[z] > 0) & ~(pred[z] > 0)), (False, (pred[z] > 0) & ~(gt[z] > 0))):
        lab, n = ndimage.label(region, structure=np.ones((3, 3)))
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())[1:]
        i = int(np.argmax(sizes))
        if best is None or sizes[i] > best[0]:
            best = (sizes[i], include, lab == i + 1)
    _, include, comp = best
    return (z, *centre(comp, pixel_mm)), include


def run_robot(session, gt: np.ndarray, *, max_clicks: int = 20, stop_at: float = 0.95,
              progress: Progress | None = None, cancel: CancelToken | None = None) -> RobotResult:
    """Simulate the standard user on ``session`` (an :class:`~polycl.interact.InteractiveSession`
    with an empty mask) against ``gt``, the reference mask ((z, y, x) on the session's input grid)."""
    if max_clicks < 1:
        raise InputError("max_clicks must be at least 1")
    gt_c = session._canonical_mask(gt) > 0
    if not gt_c.any():
        raise InputError("the reference mask is empty: nothing to segment")
    report = Reporter(progress, cancel, cancelled_message="robot user cancelled")
    res = RobotResult(max_clicks=max_clicks)
    pending = list(first_clicks(gt_c, session.pixel_mm))
    while len(res.dice) < max_clicks:
        report(len(res.dice), max_clicks, f"click {len(res.dice) + 1}")
        if pending:
            c, include = pending.pop(0), True
        else:
            nxt = next_click(session.canonical_mask, gt_c, session.pixel_mm)
            if nxt is None:
                break
            c, include = nxt
        pos = tuple(float(v) for v in session.grid.to_input(c))
        t0 = time.perf_counter()
        answer = session.add_point(pos, include=include)
        session.propagate(cancel=cancel)
        res.seconds.append(time.perf_counter() - t0)
        res.answer_seconds.append(answer.seconds)
        res.dice.append(dice3d(session.canonical_mask, gt_c))
        res.clicks.append({"click": len(res.dice), "kind": "include" if include else "exclude",
                           "z": pos[0], "y": pos[1], "x": pos[2], "dice": res.dice[-1],
                           "seconds": res.seconds[-1], "answer_seconds": answer.seconds})
        if not pending and res.dice[-1] >= stop_at:
            break
    return res


def write_csv(result: RobotResult, path) -> None:
    """One row per click: click, kind, z, y, x (input voxel indices), dice, seconds, answer_seconds."""
    import csv
    import io

    from polycl.atomic import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["click", "kind", "z", "y", "x", "dice", "seconds", "answer_seconds"])
    w.writeheader()
    w.writerows(result.clicks)
    write_text_atomic(path, buf.getvalue())
