"""The atlas location prior: where each organ should be on a new scan, and what it does to Segment.

:func:`compute_prior` registers the input to every atlas that has the wanted organs
(:mod:`polycl.atlas.registration`) and warps each organ's mask onto the input's grid; several atlases
vote (the mean of their warped masks). The result is a probability per organ object (left and right
kidney are two objects), uint8 0..255 in (z, y, x) on the input's grid.

:func:`combine` uses it per object against the U-Net's 3D components:

* a U-Net component belongs to the object whose prior holds most of it; one that lies mostly outside
  every prior (less than ``min_overlap`` = 25 % inside), or whose volume or median HU is implausible
  for the organ (:data:`PLAUSIBLE`), is dropped;
* the object's mask is the union of its kept components (source ``"both"``: U-Net and prior agree);
* where the U-Net has nothing plausible for an object, the prior thresholded at 0.5 is the coarse mask
  (source ``"prior"``), which the pipeline seeds and propagates from like a U-Net component, provided
  the prior region is itself plausible (volume for the scan's coverage, median HU >= 0: a 10 ml
  kidney tip at the edge of a slab, or a prior lying over fat, is left out);
* with no prior for the object (``"unet"``) the U-Net's mask is kept as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from polycl.errors import InputError
from polycl.progress import CancelToken, Progress, Reporter
from polycl.volume import Volume

#: Organ -> (min ml, max ml, min median HU, max median HU): wide bounds, only to reject nonsense
#: (a "kidney" of 2 l, a "liver" of air or bone). Adult organs; contrast phases move HU up to ~250, a
#: fatty liver goes below 0 HU, and a label's kidney includes sinus fat (example_ct: median 12 HU).
PLAUSIBLE = {
    "liver": (300.0, 5000.0, -60.0, 250.0),
    "spleen": (30.0, 2000.0, -30.0, 250.0),
    "kidney_right": (30.0, 600.0, -50.0, 300.0),
    "kidney_left": (30.0, 600.0, -50.0, 300.0),
}
#: Partial scans show part of an organ: the minimum volume is scaled by the z-coverage of the prior.
#: A prior taken as an object by itself must also lie on soft tissue (median HU at least this): a prior
#: warped over fat or gas, or the tip of an organ grazing the edge of a partial scan, is left out.
PRIOR_MIN_HU = 0.0


@dataclass
class Prior:
    """Per object: ``probability`` uint8 (z, y, x) 0..255 on the input's grid; ``atlases``: names that voted;
    ``seconds``: registration + warping time; ``steps``: registration log lines; ``registrations``: one
    :class:`~polycl.atlas.registration.Registration` per atlas; ``cached``: they were reused."""

    probability: dict
    atlases: list
    seconds: float = 0.0
    steps: list = field(default_factory=list)
    registrations: list = field(default_factory=list)
    cached: bool = False

    def mask(self, organ: str) -> np.ndarray:
        return self.probability[organ] >= 128


def _warp_organs(atlas, organs, reg, volume: Volume) -> dict:
    """The atlas's ``organs`` masks, warped (linear, so a soft boundary) onto the registration's low-res
    grid refined to <= 3 mm in one pass (a vector image), then resampled (linear) onto ``volume``'s grid;
    organ -> (start (z, y, x), float32 box 0..1) from :func:`_box_on_grid`, or None. The transform (affine
    + B-spline) is sampled once as a displacement field on the registration's grid (plus one voxel all
    round) and interpolated from there: 5x faster than evaluating the B-spline at every 3 mm point, the
    warped masks differ by < 0.001."""
    lab = atlas.labels.to_sitk()
    vector = sitk.Compose([sitk.Cast(lab == atlas.organs[o], sitk.sitkFloat32) for o in organs])
    grid = reg.grid
    step = np.asarray(grid.GetSpacing())
    corner = np.asarray(grid.GetOrigin()) - np.asarray(grid.GetDirection()).reshape(3, 3) @ step
    field = sitk.DisplacementFieldTransform(sitk.TransformToDisplacementField(
        reg.transform, sitk.sitkVectorFloat64, [n + 2 for n in grid.GetSize()], tuple(corner), tuple(step),
        grid.GetDirection()))
    spacing = [min(s, 3.0) for s in grid.GetSpacing()]
    size = [int(np.ceil(n * s / t)) for n, s, t in zip(grid.GetSize(), grid.GetSpacing(), spacing)]
    mid = sitk.Image(size, sitk.sitkFloat32)
    mid.SetOrigin(grid.GetOrigin())
    mid.SetSpacing(spacing)
    mid.SetDirection(grid.GetDirection())
    warped = sitk.GetArrayFromImage(sitk.Resample(vector, mid, field, sitk.sitkLinear, 0.0))
    if warped.ndim == 3:  # one organ: SimpleITK gives a scalar image back
        warped = warped[..., None]
    out = {}
    for k, organ in enumerate(organs):
        small = sitk.GetImageFromArray(np.ascontiguousarray(warped[..., k]))
        small.CopyInformation(mid)
        out[organ] = _box_on_grid(small, volume)
    return out


def _box_on_grid(small: sitk.Image, volume: Volume):
    """``small`` (a soft mask, mostly 0) resampled (linear) onto ``volume``'s grid, only in the box of
    ``volume`` voxels that can see a non-zero voxel of ``small`` (an organ fills a few % of a 512 x 512 CT):
    (start index (z, y, x), float32 box), zero outside it; None when nothing is non-zero on the grid. The
    same values as resampling the whole grid, many times faster."""
    nz = np.argwhere(sitk.GetArrayViewFromImage(small) > 0)
    if not len(nz):
        return None
    full = volume.geometry.apply_to(sitk.Image([int(v) for v in volume.shape[::-1]], sitk.sitkUInt8))
    lo, hi = nz.min(0)[::-1] - 1.0, nz.max(0)[::-1] + 1.0  # (x, y, z): linear interpolation reaches 1 voxel out
    corners = [small.TransformContinuousIndexToPhysicalPoint([float(c[0]), float(c[1]), float(c[2])])
               for c in np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])]
    idx = np.array([full.TransformPhysicalPointToContinuousIndex(p) for p in corners])
    start = np.maximum(np.floor(idx.min(0)), 0).astype(int)
    stop = np.minimum(np.ceil(idx.max(0)), np.asarray(full.GetSize()) - 1).astype(int)
    if np.any(stop < start):
        return None
    ref = sitk.Image([int(v) for v in stop - start + 1], sitk.sitkFloat32)
    ref.SetSpacing(full.GetSpacing())
    ref.SetDirection(full.GetDirection())
    ref.SetOrigin(full.TransformIndexToPhysicalPoint([int(v) for v in start]))
    box = sitk.GetArrayFromImage(sitk.Resample(small, ref, sitk.Transform(), sitk.sitkLinear, 0.0))
    return start[::-1].copy(), box


def _mean_of_boxes(boxes: list, shape, n: int) -> np.ndarray:
    """uint8 0..255 (z, y, x) of ``shape``: the sum of ``boxes`` ((start, float box) pairs) / ``n``, computed
    only over their union (the rest of a 512 x 512 CT stays 0 without numpy passing over it)."""
    out = np.zeros(shape, np.uint8)
    if not boxes:
        return out
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[0] + b[1].shape for b in boxes], axis=0)
    acc = np.zeros(hi - lo, np.float32)
    for start, box in boxes:
        a = start - lo
        acc[a[0]:a[0] + box.shape[0], a[1]:a[1] + box.shape[1], a[2]:a[2] + box.shape[2]] += box
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = np.clip(np.rint(acc * (255.0 / n)), 0, 255).astype(np.uint8)
    return out


def compute_prior(volume: Volume, organs, *, atlases=None, options=None, progress: Progress | None = None,
                  cancel: CancelToken | None = None) -> Prior:
    """Register ``volume`` to each atlas holding all of ``organs`` and warp them (mean over atlases).
    The registrations are looked up first in :mod:`polycl.atlas.cache` (same CT, atlas set and
    ``options``: the organs do not matter), and stored there when computed."""
    import time

    from polycl.atlas import cache
    from polycl.atlas.registration import RegistrationOptions, register
    from polycl.atlas.store import load_atlases

    t0 = time.perf_counter()
    organs = tuple(organs)
    report = Reporter(progress, cancel, cancelled_message="atlas prior cancelled; nothing was changed")
    usable = [a for a in (atlases if atlases is not None else load_atlases()) if all(o in a.organs for o in organs)]
    if not usable:
        raise InputError(f"no atlas has {', '.join(organs)}; add one with `polycl atlas add`")
    options = options or RegistrationOptions()
    key = cache.key(volume, [a.image for a in usable], options)
    regs = cache.get(key)
    cached = regs is not None
    boxes = {o: [] for o in organs}
    steps, used = [], []
    for i, atlas in enumerate(usable):
        span = report.span(i / len(usable), (i + 1) / len(usable))
        reg = regs[i] if cached else register(volume, atlas.image, options, progress=span.span(0.0, 0.9),
                                              cancel=cancel)
        used.append(reg)
        steps.append(f"{atlas.name}: " + ("registration reused (same CT, atlases and options)" if cached
                                          else "; ".join(reg.steps)))
        for o, warped in _warp_organs(atlas, organs, reg, volume).items():
            if warped is not None:
                boxes[o].append(warped)
        span(1, 1, f"atlas {atlas.name}: warped")
    if not cached:
        cache.put(key, used)
    prob = {o: _mean_of_boxes(boxes[o], volume.shape, len(usable)) for o in organs}
    return Prior(prob, [a.name for a in usable], time.perf_counter() - t0, steps, used, cached)


def plausible(organ: str, component: np.ndarray, hu: np.ndarray, voxel_ml: float, coverage: float = 1.0) -> bool:
    """Volume (ml) and median HU of ``component`` within :data:`PLAUSIBLE` for ``organ``; ``coverage``
    (0..1): the fraction of the organ the scan shows (a slab shows part of it), scales the minimum."""
    if organ not in PLAUSIBLE:
        return True
    vmin, vmax, hmin, hmax = PLAUSIBLE[organ]
    ml = float(np.count_nonzero(component)) * voxel_ml
    med = float(np.median(hu[component]))
    return vmin * coverage <= ml <= vmax and hmin <= med <= hmax


@dataclass
class ObjectSource:
    """Where one object's coarse mask came from: 'unet', 'prior' or 'both'; ``dropped``: U-Net
    components rejected for this object (no overlap with its prior, or implausible)."""

    organ: str
    source: str
    dropped: int = 0
    ml: float = 0.0


def combine(unet: np.ndarray | None, prior_masks: dict, hu: np.ndarray, voxel_ml: float, *,
            min_overlap: float = 0.25) -> tuple[list[np.ndarray], list[ObjectSource]]:
    """Per object: (coarse mask (z, y, x) bool, its :class:`ObjectSource`). ``unet``: the U-Net's
    binary mask or None (atlas-only target); ``prior_masks``: organ -> bool mask on the same grid;
    ``hu``: the CT on the same grid. Each U-Net component belongs to the object whose prior holds the
    largest fraction of it, when that fraction is at least ``min_overlap`` (else to none: dropped).
    Objects with neither a plausible component nor a prior are left out."""
    from skimage.measure import label

    organs = list(prior_masks)
    owner: dict[int, list[np.ndarray]] = {i: [] for i in range(len(organs))}
    if unet is not None and np.any(unet):
        lab, n = label(unet > 0, connectivity=3, return_num=True)
        for c in (lab == i + 1 for i in range(n)):
            inside = [float(np.count_nonzero(c & prior_masks[o])) / float(np.count_nonzero(c)) for o in organs]
            best = int(np.argmax(inside))
            if inside[best] >= min_overlap:
                owner[best].append(c)
    masks, sources = [], []
    for i, organ in enumerate(organs):
        pm = prior_masks[organ]
        coverage = 1.0 if not pm.any() else min(1.0, float(pm.any(axis=(1, 2)).sum()) / max(1, _organ_slices(pm)))
        kept = [c for c in owner[i] if plausible(organ, c, hu, voxel_ml, coverage)]
        dropped = len(owner[i]) - len(kept)
        if kept:
            mask = np.any(kept, axis=0)
            masks.append(mask)
            sources.append(ObjectSource(organ, "both", dropped, float(mask.sum()) * voxel_ml))
        elif pm.any() and plausible(organ, pm, hu, voxel_ml, coverage) and np.median(hu[pm]) >= PRIOR_MIN_HU:
            masks.append(pm.copy())
            sources.append(ObjectSource(organ, "prior", dropped, float(pm.sum()) * voxel_ml))
    return masks, sources


def _organ_slices(pm: np.ndarray) -> int:
    """Slices the prior spans; when the prior touches the first or last slice the organ goes on beyond
    the scan, so it counts as at least twice as long (a partial-scan allowance for :func:`plausible`)."""
    nz = np.flatnonzero(pm.any(axis=(1, 2)))
    n = int(nz[-1] - nz[0] + 1)
    return 2 * n if nz[0] == 0 or nz[-1] == pm.shape[0] - 1 else n
