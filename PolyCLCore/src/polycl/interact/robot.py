"""The field's simulated user ("robot user") that measures interactive segmentation.

Two protocols. *Clicks* (:func:`run_robot`; nnInteractive, the SAM-family papers):

1. the first include click at the centre (largest in-plane distance-transform value, in mm) of
   the organ's largest axial slice, one click per object (each 3D connected component of the
   reference: two kidneys take two clicks), then the volume is filled by propagation;
2. each next click at the centre of the largest error region (a 2D connected region of misses or
   leaks) on the axial slice with the most wrong voxels: an include click for a miss, an exclude
   click for a leak; the session re-propagates locally after every click;
3. 3D Dice after every click; NoC90 / NoC95 = clicks needed to reach Dice 0.90 / 0.95, capped at
   ``max_clicks`` (the cap is reported when the target is never reached). The run stops once
   Dice 0.95 is reached (the curve stays at its last value from there) or at ``max_clicks``.

*Box* (:func:`run_box_protocol`; the CVPR 2025 challenge "Foundation Models for Interactive 3D
Biomedical Image Segmentation"): the challenge's box of each object, a 2D box on the object's
largest axial slice with the object's z-range, then 5 corrective clicks placed as above; after each
of the 6 interactions the 3D Dice and the normalised surface Dice (NSD, 2 mm tolerance; 0 when Dice
is under 0.2, as the challenge counts it); DSC AUC and NSD AUC are the challenge's trapezoid areas
over the 5 click steps (0..4), final DSC and NSD are after the 5th click.

All choices are made in canonical (LPS) slice space; the clicks are handed to the session as
voxel indices of the input array, as a front end would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from polycl.errors import InputError
from polycl.masks import dice
from polycl.progress import CancelToken, Progress, Reporter

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
        """Clicks to reach Dice ``target``; ``max_clicks`` when never reached (see :meth:`reached`)."""
        for i, d in enumerate(self.dice):
            if d >= target:
                return i + 1
        return self.max_clicks

    def reached(self, target: float) -> bool:
        """Whether any click reached Dice ``target``."""
        return any(d >= target for d in self.dice)

    def noc_text(self, target: float) -> str:
        """:meth:`noc` as printed: ``'3'``, or ``'>10'`` when 10 clicks never reached ``target``."""
        return str(self.noc(target)) if self.reached(target) else f">{len(self.dice)}"

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
        """``NoC90=<n> NoC95=<n> dice@1=<d> [dice@5=<d>] seconds_per_click=<s>``: a target never reached
        reads ``>N`` (N clicks made), and ``dice@5`` appears only when five clicks were made."""
        at5 = f"dice@5={self.dice_at(5):.3f} " if len(self.dice) >= 5 else ""
        return (f"NoC90={self.noc_text(0.90)} NoC95={self.noc_text(0.95)} dice@1={self.dice_at(1):.3f} "
                f"{at5}seconds_per_click={self.seconds_per_click:.2f}")


def centre(mask2d: np.ndarray, pixel_mm: tuple[float, float]) -> tuple[int, int]:
    """(y, x) of the largest distance-transform value (mm) inside a 2D mask."""
    edt = ndimage.distance_transform_edt(np.pad(mask2d, 1), sampling=pixel_mm)[1:-1, 1:-1]
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(edt)), edt.shape))


def objects(gt: np.ndarray):
    """The objects of a reference mask, largest first: (bool (z, y, x) component, its largest axial
    slice) per 3D component (26-connected) of at least
    :data:`polycl.propagate.seeds.MIN_COMPONENT_FRACTION` of the largest, as a coarse seed volume's
    objects are counted."""
    from polycl.masks import components_by_size
    from polycl.propagate.seeds import MIN_COMPONENT_FRACTION

    comps = components_by_size(gt, min_fraction=MIN_COMPONENT_FRACTION)
    if not comps:
        raise InputError("the reference mask is empty: nothing to segment")
    for comp in comps:
        yield comp, int(np.argmax(comp.reshape(comp.shape[0], -1).sum(axis=1)))


def first_clicks(gt: np.ndarray, pixel_mm) -> list[tuple[int, int, int]]:
    """One canonical (z, y, x) per object of ``gt``: the centre of the object's largest slice."""
    clicks = []
    for comp, z in objects(gt):
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
    gt_c = session.mask_to_canonical(gt) > 0
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
        res.dice.append(dice(session.canonical_mask, gt_c))
        res.clicks.append({"click": len(res.dice), "kind": "include" if include else "exclude",
                           "z": pos[0], "y": pos[1], "x": pos[2], "dice": res.dice[-1],
                           "seconds": res.seconds[-1], "answer_seconds": answer.seconds})
        if not pending and res.dice[-1] >= stop_at:
            break
    return res


#: The challenge's corrective clicks after the box, and its NSD tolerance (mm).
BOX_PROTOCOL_CLICKS = 5
NSD_TOLERANCE_MM = 2.0


@dataclass
class BoxProtocolResult:
    """Per interaction (the box, then each click): ``dsc``, ``nsd``, ``seconds``, ``steps`` (what was
    done: 'box' or 'include'/'exclude' with its input (z, y, x))."""

    dsc: list[float] = field(default_factory=list)
    nsd: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)

    @staticmethod
    def _auc(values: list[float]) -> float:
        tail = values[-BOX_PROTOCOL_CLICKS:]
        return float(np.trapezoid(tail, dx=1.0)) if len(tail) > 1 else 0.0

    @property
    def dsc_auc(self) -> float:
        """Trapezoid area of DSC over the click steps (x = 0..4: at most 4.0), as the challenge computes it."""
        return self._auc(self.dsc)

    @property
    def nsd_auc(self) -> float:
        return self._auc(self.nsd)

    @property
    def final_dsc(self) -> float:
        return self.dsc[-1] if self.dsc else 0.0

    @property
    def final_nsd(self) -> float:
        return self.nsd[-1] if self.nsd else 0.0

    @property
    def seconds_per_interaction(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else 0.0

    def summary(self) -> str:
        return (f"DSC_AUC={self.dsc_auc:.3f} NSD_AUC={self.nsd_auc:.3f} final_DSC={self.final_dsc:.3f} "
                f"final_NSD={self.final_nsd:.3f} box_DSC={self.dsc[0] if self.dsc else 0.0:.3f} "
                f"seconds_per_interaction={self.seconds_per_interaction:.2f}")


def challenge_boxes(gt: np.ndarray) -> list[tuple[int, int, int, int, int, int, int]]:
    """The challenge's box per object of a canonical (z, y, x) reference: (z_min, z_max, z_mid, y0, x0,
    y1, x1), z_mid the object's largest axial slice and (y0, x0)..(y1, x1) its extent there."""
    out = []
    for comp, z in objects(gt):
        zs = np.flatnonzero(comp.any(axis=(1, 2)))
        ys, xs = np.nonzero(comp[z])
        out.append((int(zs[0]), int(zs[-1]), z, int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())))
    return out


def run_box_protocol(session, gt: np.ndarray, *, clicks: int = BOX_PROTOCOL_CLICKS, progress: Progress | None = None,
                     cancel: CancelToken | None = None) -> BoxProtocolResult:
    """The challenge's protocol on ``session`` (an empty :class:`~polycl.interact.InteractiveSession`)
    against ``gt`` ((z, y, x) on the session's input grid): each object's box on its largest slice,
    one fill limited to the boxes' z-ranges, then ``clicks`` corrective clicks (:func:`next_click`),
    each followed by local re-propagation. Scores after every interaction."""
    from polycl.evaluate import surface_dice
    from polycl.orientation import orientation

    gt_c = session.mask_to_canonical(gt) > 0
    if not gt_c.any():
        raise InputError("the reference mask is empty: nothing to segment")
    sx, sy, sz = orientation(session.volume).spacing_xyz
    spacing = (sz, sy, sx)
    report = Reporter(progress, cancel, cancelled_message="box protocol cancelled")
    res = BoxProtocolResult()

    def score(t0: float, step: dict) -> None:
        res.seconds.append(time.perf_counter() - t0)
        pred = session.canonical_mask > 0
        d = dice(pred, gt_c)
        res.dsc.append(d)
        res.nsd.append(surface_dice(pred, gt_c, spacing, NSD_TOLERANCE_MM) if d >= 0.2 else 0.0)
        res.steps.append({**step, "dsc": d, "nsd": res.nsd[-1], "seconds": res.seconds[-1]})

    report(0, clicks + 1, "box")
    t0 = time.perf_counter()
    boxes = challenge_boxes(gt_c)
    for z0, z1, z, y0, x0, y1, x1 in boxes:
        a = tuple(float(v) for v in session.grid.to_input((z, y0, x0)))
        b = tuple(float(v) for v in session.grid.to_input((z, y1, x1)))
        session.add_box(a, b)
    zin = [tuple(int(round(session.grid.to_input((zz, 0, 0))[0])) for zz in (z0, z1)) for z0, z1, *_ in boxes]
    session.propagate(cancel=cancel, limits=zin)
    score(t0, {"step": "box"})
    for i in range(clicks):
        report(i + 1, clicks + 1, f"click {i + 1}")
        nxt = next_click(session.canonical_mask, gt_c, session.pixel_mm)
        if nxt is None:  # perfect: the scores stay as they are
            res.dsc.append(res.dsc[-1])
            res.nsd.append(res.nsd[-1])
            continue
        c, include = nxt
        pos = tuple(float(v) for v in session.grid.to_input(c))
        t0 = time.perf_counter()
        session.add_point(pos, include=include)
        session.propagate(cancel=cancel)
        score(t0, {"step": "include" if include else "exclude", "z": pos[0], "y": pos[1], "x": pos[2]})
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
