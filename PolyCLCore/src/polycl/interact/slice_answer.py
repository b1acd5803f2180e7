"""How the prompts of one axial slice become a mask (canonical slice pixels, (y, x)).

LiteMedSAM was trained with boxes and does not answer clicks (DESIGN.md: one include click at the
liver's centre gives an empty mask), so a click becomes a box first:

* **include click on an empty slice** (the first click on an organ): SAM answers several boxes
  around the click in one decoder pass (:func:`first_answer`): the boxes of the regions grown around
  it within two HU tolerances (:func:`grow_region`: scikit-image ``flood`` on the smoothed slice,
  opened to cut thin bridges) and squares of :data:`CANDIDATE_SQUARES_MM` (physical sizes, so the
  same on 0.6 mm and 3 mm pixels). The answer SAM is most confident of, among those that hold the
  click (holes filled: a click in the renal sinus is inside the kidney) or pass within
  :data:`CLICK_REACH_MM` of it, wins. No HU tolerance decides what the organ is: a contrast-enhanced
  kidney spans 150 HU between cortex and sinus, and the click may sit on either.
* **include click** beside a mask already on the slice: the grown region joined with the part of
  the mask it touches gives the box; SAM answers the box; SAM's mask is kept where its HU is
  plausible, and the click's own region is added if SAM missed the click (SAM's quality guards the
  choice). An include click only ever adds to the mask.
* **exclude click** inside the mask: removes the part of the mask around it that HU or shape
  separate from the rest (:func:`remove_around`): pixels whose HU is far from the organ's, else
  the piece that a morphological opening splits off, else the mask is cut back by a box that
  leaves the click out and SAM is asked again inside it.
* **box**: SAM's answer to the box, as the Segment Editor's box prompt.

All sizes are in pixels unless they end in ``_mm``; HU are Hounsfield units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from polycl.masks import mask_box

#: Region growing: HU tolerance around the click's (median-smoothed) value (25 HU: measured on
#: the liver slices of the non-contrast example_ct, where 45 HU ran into the neighbouring organs).
GROW_TOLERANCE_HU = 25.0
#: Region growing stays inside a square window of this half-size (mm) around the click.
GROW_RADIUS_MM = 90.0
#: Opening radius (mm) that cuts the grown region's thin bridges into neighbouring tissue.
GROW_OPEN_MM = 3.0
#: An include click on a slice with a mask adds SAM's answer only this close (mm) to the grown region.
ADD_NEAR_MM = 6.0
#: SAM's answer to an include click replaces the touched pieces' border when it covers this much of them...
REDRAW_COVER = 0.9
#: ... and is at most this many times their area.
REDRAW_GROWTH = 1.5
#: First click: side lengths (mm) of the square boxes around the click that SAM answers, beside the
#: grown regions' boxes. From a 1 cm structure to the widest liver slice (~20 cm).
CANDIDATE_SQUARES_MM = (20.0, 35.0, 50.0, 70.0, 100.0, 140.0, 200.0)
#: First click: HU tolerances of the grown regions whose boxes are candidates too.
CANDIDATE_TOLERANCES_HU = (10.0, GROW_TOLERANCE_HU)
#: First click: an answer that does not hold the click counts when it passes this close (mm).
CLICK_REACH_MM = 3.0
#: A click on an empty slice of a filled segment: its answer may be at most this many times as wide
#: and tall as the segment on the nearest slice that has one, plus this slack (mm).
NEIGHBOUR_GROWTH = 1.5
NEIGHBOUR_SLACK_MM = 10.0
#: When SAM misses the click, the grown region within this radius (mm) of it is added.
CLICK_RADIUS_MM = 10.0
#: Box margin (px) around a region given to SAM.
BOX_MARGIN_PX = 3
#: SAM's answer is trusted when its predicted IoU is at least this.
MIN_SAM_QUALITY = 0.5
#: Pixels of SAM's answer whose smoothed HU is this far from the organ's median are dropped.
HU_PLAUSIBLE = 60.0


@dataclass
class SliceContext:
    """One canonical slice: ``hu`` (y, x) HU, ``smooth`` its median-filtered copy, pixel size (mm)."""

    hu: np.ndarray
    smooth: np.ndarray
    pixel_mm: tuple[float, float]  # (row, column) spacing

    @classmethod
    def of(cls, hu2d: np.ndarray, pixel_mm: tuple[float, float]) -> "SliceContext":
        hu = np.asarray(hu2d, dtype=np.float32)
        return cls(hu, ndimage.median_filter(hu, size=5), (float(pixel_mm[0]), float(pixel_mm[1])))

    def px(self, mm: float) -> int:
        return max(1, int(round(mm / min(self.pixel_mm))))


def disk(radius: int) -> np.ndarray:
    from skimage.morphology import disk as _disk

    return _disk(max(1, int(radius))).astype(bool)


def component_at(mask: np.ndarray, yx: tuple[int, int]) -> np.ndarray:
    """The 8-connected component of ``mask`` containing pixel ``yx`` (empty if it is background)."""
    lab, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    v = lab[yx]
    return lab == v if v else np.zeros_like(mask, bool)


def nearest_component(mask: np.ndarray, yx: tuple[int, int]) -> np.ndarray:
    """The component containing ``yx``, else the one nearest to it."""
    if not mask.any():
        return mask
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if lab[yx]:
        return lab == lab[yx]
    _, (iy, ix) = ndimage.distance_transform_edt(lab == 0, return_indices=True)
    return lab == lab[iy[yx], ix[yx]]


def grow_region(ctx: SliceContext, yx: tuple[int, int], tolerance: float = GROW_TOLERANCE_HU) -> np.ndarray:
    """The region around ``yx`` whose smoothed HU lies within ``tolerance`` of the click's, inside a
    :data:`GROW_RADIUS_MM` window, opened by :data:`GROW_OPEN_MM` and hole-filled; (y, x) bool."""
    from skimage.segmentation import flood

    h, w = ctx.hu.shape
    ry, rx = (max(2, int(GROW_RADIUS_MM / s)) for s in ctx.pixel_mm)
    y0, y1, x0, x1 = max(0, yx[0] - ry), min(h, yx[0] + ry + 1), max(0, yx[1] - rx), min(w, yx[1] + rx + 1)
    win = ctx.smooth[y0:y1, x0:x1]
    seed = (yx[0] - y0, yx[1] - x0)
    region = flood(win, seed, tolerance=float(tolerance))
    opened = ndimage.binary_opening(region, disk(ctx.px(GROW_OPEN_MM)))
    if opened[seed]:
        region = component_at(opened, seed)
    else:  # the click sits on a thin part: keep the nearest piece of the opened region, or the raw one
        region = nearest_component(opened, seed) if opened.any() else region
        region[seed] = True
    region = ndimage.binary_fill_holes(region)
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = region
    return out


def _sam(segmenter, k: int, box) -> tuple[np.ndarray, float]:
    segmenter.set_slice(k)
    m, q = segmenter.predict(box=box)
    return m > 0, q


def _plausible(ctx: SliceContext, mask: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``mask`` without pixels whose smoothed HU is over :data:`HU_PLAUSIBLE` from ``reference``'s median."""
    if not reference.any():
        return mask
    med = float(np.median(ctx.smooth[reference]))
    return mask & (np.abs(ctx.smooth - med) <= HU_PLAUSIBLE)


def answer_include(segmenter, k: int, ctx: SliceContext, current: np.ndarray,
                   yx: tuple[int, int], neighbour: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """``current`` plus the organ under an include click at ``yx``; returns (mask, quality).

    With no mask near the click the answer is :func:`first_answer`'s (``neighbour``: the segment on the
    nearest slice that has one, which bounds the answer's size). On a slice whose mask the
    click touches (within 5 mm of its grown region), the click adds what SAM finds for the box of
    the grown region and the mask's pieces it touches: all of it when SAM's mask covers those pieces
    (:data:`REDRAW_COVER`) without growing past :data:`REDRAW_GROWTH` times their area (SAM then
    agrees with the mask and redraws its border, which a chained mask tends to draw too tight),
    else only within :data:`ADD_NEAR_MM` of the grown region. An include click only ever adds."""
    if current[yx]:
        return current, 1.0
    grown = grow_region(ctx, yx)
    touching = current & ndimage.binary_dilation(grown, disk(ctx.px(5.0)))
    if not touching.any():
        piece, quality = first_answer(segmenter, k, ctx, yx, neighbour, grown)
        return current | piece, quality
    lab, _ = ndimage.label(current, structure=np.ones((3, 3)))
    near = np.isin(lab, np.unique(lab[touching & (lab > 0)]))
    sam, quality = _sam(segmenter, k, mask_box(grown | near, BOX_MARGIN_PX))
    sam = _plausible(ctx, sam, grown)
    sam = ndimage.binary_fill_holes(ndimage.binary_opening(sam, disk(1)))
    redraw = (sam & near).sum() >= REDRAW_COVER * near.sum() and sam.sum() <= REDRAW_GROWTH * near.sum()
    if not redraw:
        sam &= ndimage.binary_dilation(grown, disk(ctx.px(ADD_NEAR_MM)))
    if quality >= MIN_SAM_QUALITY and sam.any():
        piece = nearest_component(sam | current, yx) & (sam | current)
        if not piece[yx]:
            piece = piece | (component_at(grown, yx) & disk_at(grown.shape, yx, ctx.px(CLICK_RADIUS_MM)))
    else:
        piece = grown & disk_at(grown.shape, yx, ctx.px(CLICK_RADIUS_MM))
    return current | piece, quality


def candidate_boxes(ctx: SliceContext, yx: tuple[int, int],
                    grown: np.ndarray | None = None) -> list[tuple[float, float, float, float]]:
    """The boxes (x0, y0, x1, y1) a first click at ``yx`` offers SAM: those of the regions grown
    within :data:`CANDIDATE_TOLERANCES_HU`, then squares of :data:`CANDIDATE_SQUARES_MM` centred on
    the click (clipped to the slice). ``grown``: the region already grown at :data:`GROW_TOLERANCE_HU`."""
    h, w = ctx.hu.shape
    boxes = [mask_box(grown if grown is not None and tol == GROW_TOLERANCE_HU else grow_region(ctx, yx, tol),
                      BOX_MARGIN_PX)
             for tol in CANDIDATE_TOLERANCES_HU]
    for mm in CANDIDATE_SQUARES_MM:
        ry, rx = (mm / 2.0 / p for p in ctx.pixel_mm)
        boxes.append((max(0.0, yx[1] - rx), max(0.0, yx[0] - ry), min(w - 1.0, yx[1] + rx), min(h - 1.0, yx[0] + ry)))
    return boxes


def first_answer(segmenter, k: int, ctx: SliceContext, yx: tuple[int, int],
                 neighbour: np.ndarray | None = None, grown: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The organ under a click on an empty part of slice ``k``: (y, x) bool mask, SAM quality.

    SAM answers every box of :func:`candidate_boxes` in one decoder pass; an answer counts when it
    holds the click once its holes are filled, or passes within :data:`CLICK_REACH_MM`; the one SAM
    is most confident of wins (opened by one pixel, holes filled, its piece nearest the click).
    LiteMedSAM was trained on boxes around whole organs, and its quality estimate is highest for
    the box that fits the organ: on the clinical validation scan the winning box gives the kidney,
    liver and spleen at 2D Dice 0.92-0.97 where the grown region alone gave 24 pixels of renal sinus
    (evaluation.md). ``neighbour``: the segment's mask on the nearest slice that has one (a click
    that corrects a filled volume): an answer wider or taller than :data:`NEIGHBOUR_GROWTH` times
    its box plus :data:`NEIGHBOUR_SLACK_MM` is another, larger structure and does not count. With no
    answer near the click: the grown region, quality 0. ``grown``: the click's region at
    :data:`GROW_TOLERANCE_HU` when the caller has it."""
    segmenter.set_slice(k)
    masks, qualities = segmenter.predict_boxes(candidate_boxes(ctx, yx, grown))
    reach = ctx.px(CLICK_REACH_MM)
    limit = None
    if neighbour is not None and neighbour.any():
        ys, xs = np.nonzero(neighbour)
        limit = (NEIGHBOUR_GROWTH * (np.ptp(ys) + 1) + ctx.px(NEIGHBOUR_SLACK_MM),
                 NEIGHBOUR_GROWTH * (np.ptp(xs) + 1) + ctx.px(NEIGHBOUR_SLACK_MM))
    best, best_q = None, -1.0
    for m, q in zip(masks, qualities):
        m = m > 0
        if q <= best_q or not m.any():
            continue
        if limit is not None:
            ys, xs = np.nonzero(m)
            if np.ptp(ys) + 1 > limit[0] or np.ptp(xs) + 1 > limit[1]:
                continue
        y0, y1 = max(0, yx[0] - reach), yx[0] + reach + 1
        x0, x1 = max(0, yx[1] - reach), yx[1] + reach + 1
        holds = ndimage.binary_fill_holes(m)[yx] or (m[y0:y1, x0:x1] & disk_at(
            (y1 - y0, x1 - x0), (yx[0] - y0, yx[1] - x0), reach)).any()
        if holds:
            best, best_q = m, float(q)
    if best is None:
        return (grown if grown is not None else grow_region(ctx, yx)), 0.0
    best = ndimage.binary_fill_holes(ndimage.binary_opening(best, disk(1)))
    return (nearest_component(best, yx) if best.any() else best), best_q


def disk_at(shape, yx: tuple[int, int], radius: int) -> np.ndarray:
    """A (y, x) bool mask of ``shape`` holding the closed disk of ``radius`` pixels around ``yx``
    (distance <= radius; :func:`skimage.draw.disk` draws the open disk, hence the hair more)."""
    from skimage.draw import disk

    out = np.zeros(shape, bool)
    out[disk(yx, radius + 1e-3, shape=shape)] = True
    return out


def remove_around(segmenter, k: int, ctx: SliceContext, current: np.ndarray, yx: tuple[int, int],
                  keep: list[tuple[int, int]]) -> tuple[np.ndarray, float]:
    """``current`` without the part around an exclude click at ``yx``; ``keep``: include clicks of
    the slice, whose pixels stay. Returns (mask, quality). Works on a crop around the clicked
    component (the morphology on a whole 512 x 512 slice would cost more than SAM's decoder)."""
    if not current[yx]:
        return current, 1.0
    comp = component_at(current, yx)
    ys, xs = np.nonzero(comp)
    pad = 2 * ctx.px(12.0) + 4
    y0, x0 = max(0, ys.min() - pad), max(0, xs.min() - pad)
    y1, x1 = min(comp.shape[0], ys.max() + pad + 1), min(comp.shape[1], xs.max() + pad + 1)
    crop = SliceContext(ctx.hu[y0:y1, x0:x1], ctx.smooth[y0:y1, x0:x1], ctx.pixel_mm)
    anchors = [(p[0] - y0, p[1] - x0) for p in keep if comp[p]]
    left, quality = _remove_in(segmenter, k, crop, comp[y0:y1, x0:x1], (yx[0] - y0, yx[1] - x0), anchors, (y0, x0))
    out = current & ~comp
    out[y0:y1, x0:x1] |= left
    return out, quality


def _remove_in(segmenter, k: int, ctx: SliceContext, comp: np.ndarray, yx: tuple[int, int],
               anchors: list[tuple[int, int]], origin: tuple[int, int]) -> tuple[np.ndarray, float]:
    """:func:`remove_around` on a crop: ``comp`` the clicked component, ``origin`` the crop's (y, x)
    in the slice (for SAM's box). Returns what stays of ``comp`` and the quality."""
    rest = np.zeros_like(comp)
    core = comp.copy()
    if anchors:
        core = np.zeros_like(comp)
        for p in anchors:
            core |= component_at(comp & (np.abs(ctx.smooth - ctx.smooth[p]) <= HU_PLAUSIBLE), p)
    # 1. HU: the click's tissue differs from the organ's
    if core.any() and abs(float(ctx.smooth[yx]) - float(np.median(ctx.smooth[core]))) > HU_PLAUSIBLE / 2:
        odd = comp & (np.abs(ctx.smooth - ctx.smooth[yx]) <= HU_PLAUSIBLE / 2)
        cut = component_at(odd, yx)
        if cut.sum() < 0.8 * comp.sum():
            left = comp & ~ndimage.binary_dilation(cut, disk(1))
            return rest | _largest_with(left, anchors), 1.0
    # 2. shape: an opening splits the click's piece from the organ
    for r_mm in (3.0, 5.0, 8.0, 12.0):
        opened = ndimage.binary_opening(comp, disk(ctx.px(r_mm)))
        lab, n = ndimage.label(opened, structure=np.ones((3, 3)))
        if n < 2:
            continue
        from skimage.segmentation import expand_labels

        owner = expand_labels(lab, distance=ctx.px(r_mm) * 2 + 2) * comp
        mine = owner[yx]
        if mine == 0:
            continue
        kept_labels = {int(owner[p]) for p in anchors} - {0}
        if mine in kept_labels:
            continue
        sizes = np.bincount(owner.ravel(), minlength=n + 1)
        if not kept_labels and sizes[mine] >= sizes[1:].max():
            continue  # the click is on the biggest piece: that is the organ, not a leak
        return rest | (comp & (owner != mine)), 1.0
    # 3. box: cut the component's box back past the click on its nearest side and ask SAM again
    ys, xs = np.nonzero(comp)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    y, x = yx
    sides = {"x0": x - x0, "x1": x1 - x, "y0": y - y0, "y1": y1 - y}
    side = min(sides, key=sides.get)
    m = 2
    box = [x0, y0, x1, y1]
    box[{"x0": 0, "y0": 1, "x1": 2, "y1": 3}[side]] = (x + m if side == "x0" else y + m if side == "y0"
                                                       else x - m if side == "x1" else y - m)
    inside = np.zeros_like(comp)
    if box[2] > box[0] and box[3] > box[1]:
        inside[int(box[1]):int(box[3]) + 1, int(box[0]):int(box[2]) + 1] = True
    oy, ox = origin
    if inside.any():
        sam, quality = _sam(segmenter, k, (box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy))
        sam = sam[oy:oy + comp.shape[0], ox:ox + comp.shape[1]]
    else:
        sam, quality = inside, 0.0
    new = comp & inside & (sam if quality >= MIN_SAM_QUALITY and (sam & comp).any() else True)
    new[yx] = False
    return rest | _largest_with(new, anchors), quality


def _largest_with(mask: np.ndarray, anchors: list[tuple[int, int]]) -> np.ndarray:
    """Components of ``mask`` holding an anchor, else its largest component."""
    if not mask.any():
        return mask
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    keep = {int(lab[p]) for p in anchors} - {0}
    if not keep:
        keep = {int(np.argmax(np.bincount(lab.ravel())[1:]) + 1)}
    return np.isin(lab, list(keep))


def answer_box(segmenter, k: int, ctx: SliceContext, current: np.ndarray, box) -> tuple[np.ndarray, float]:
    """SAM's answer to ``box`` (x0, y0, x1, y1) replaces the mask inside the box."""
    sam, quality = _sam(segmenter, k, box)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    out = current.copy()
    out[max(0, y0):y1 + 1, max(0, x0):x1 + 1] = False
    return out | ndimage.binary_fill_holes(sam), quality
