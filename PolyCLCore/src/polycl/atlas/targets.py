"""Atlas-based targets and the atlas prior inside Segment (the one hook :func:`polycl.segment.run` calls).

* :class:`AtlasTarget`: a target with no network (``polycl segment --target spleen``): the warped
  atlas organ is the coarse mask, which the pipeline then seeds with SAM and propagates.
* :func:`apply_prior`: after the U-Net (or instead of it), per object of the target: U-Net components
  that miss the organ's prior or are implausible are dropped, and an object the U-Net did not find
  plausibly is taken from the prior. Returns the new coarse mask and each object's source.

``SegmentOptions.prior``: ``auto`` (default), ``on`` (an error when no atlas has the target) or ``off``.
``auto``: for targets an atlas has; a one-object target (liver) gets the prior only when the U-Net's
mask is empty or implausible in volume/HU (in the liver leave-one-scan-out study ``on`` changed no
scan whose U-Net liver was plausible and only added a registration, docs/evaluation.md); a
several-object target (kidneys) always gets it. Either way a U-Net object that overlaps its prior
and is plausible is kept exactly as the U-Net drew it (source 'both'). A registration that fails
(e.g. no body in the image, a scan too thin to place) under ``auto`` leaves the U-Net's mask with a
note; under ``on`` or for an atlas-only target it is an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from polycl.errors import InputError

PRIOR_CHOICES = ("auto", "on", "off")


@dataclass
class _Entry:
    name: str
    source: str = "atlas"


@dataclass
class AtlasTarget:
    """A target Segment draws with no network (``atlas:<organ>``, :func:`polycl.catalogue.load`): the
    warped atlas organ is the coarse mask. It answers what Segment and the front ends ask of a loaded
    U-Net: ``target`` (an atlas organ name or 'kidney'), ``components`` (objects), ``entry.name``
    ('atlas:<target>') and ``device``; :func:`polycl.segment.run` tells it from a network by its type."""

    target: str
    components: int = 1
    device: str = "cpu"
    entry: _Entry = field(default_factory=lambda: _Entry(""))

    def __post_init__(self) -> None:
        from polycl.atlas.store import atlas_organs, target_objects

        objects = target_objects(self.target)
        if not objects:
            raise InputError(f"no atlas has '{self.target}'; atlas-based targets: {', '.join(atlas_organs())} "
                             "(add labelled scans with `polycl atlas add`)")
        self.components = len(objects)
        self.entry = _Entry(f"atlas:{self.target}")


def atlas_targets() -> list[str]:
    """Targets that can be segmented by the atlas alone (every atlas organ, plus 'kidney' for both
    kidneys). The Slicer model list shows these labelled atlas-based."""
    from polycl.atlas.store import atlas_organs, target_objects

    organs = atlas_organs()
    return organs + (["kidney"] if target_objects("kidney") else [])


@dataclass
class PriorOutcome:
    """``coarse``: uint8 (z, y, x) canonical; ``sources``: one dict per object (organ, source, dropped,
    ml, prior_s: seconds of registration + warping; note: why the prior was skipped); ``note``:
    the registration log."""

    coarse: np.ndarray
    sources: list = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""
    masks: list = field(default_factory=list)  # per object of ``sources`` (when the prior ran): bool (z, y, x)
    others: dict = field(default_factory=dict)  # the atlas's other organs' priors (bool (z, y, x)), canonical

    def draw_from_image(self, hu: np.ndarray, segmenter, spacing_xyz, report=None) -> np.ndarray | None:
        """Objects taken from the prior alone (source 'prior') are redrawn from the image
        (:func:`polycl.atlas.delineate.delineate`): returns their union (bool (z, y, x)), which is the
        final mask of those objects (already SAM's, propagated), or None when none was drawn, and
        leaves in :attr:`coarse` only the objects Segment still has to work on. Each drawn source
        gets ``seed`` and ``seed_quality``; a prior that stays gets a ``note``. ``report``: a
        :class:`~polycl.progress.Reporter`."""
        from polycl.atlas.delineate import delineate

        if not any(s["source"] == "prior" for s in self.sources) or len(self.masks) != len(self.sources):
            return None
        drawn = np.zeros(self.coarse.shape, bool)
        rest = np.zeros_like(self.coarse)
        n = len(self.sources)
        for i, (m, src) in enumerate(zip(self.masks, self.sources)):
            span = report.span(i / n, (i + 1) / n) if report is not None else None
            rivals = {**self.others, **{o["organ"]: mm for mm, o in zip(self.masks, self.sources) if o is not src}}
            d = (delineate(hu, m, segmenter, spacing_xyz, src["organ"], span, rivals) if src["source"] == "prior"
                 else None)
            if d is not None and d.mask is not None:
                drawn |= d.mask
                src.update(seed=d.seed, seed_quality=round(d.quality, 3),
                           ml=round(float(d.mask.sum()) * float(np.prod(spacing_xyz)) / 1000.0, 1))
            else:
                if d is not None:
                    src["note"] = f"kept the atlas prior: {d.note}"
                rest[m] = 1
        self.coarse = rest
        return drawn if drawn.any() else None


def wanted(model, prior: str) -> tuple[str, ...]:
    """The atlas objects the prior covers for ``model``'s target under option ``prior``; () when off."""
    from polycl.atlas.store import target_objects

    if prior not in PRIOR_CHOICES:
        raise InputError(f"prior must be one of {', '.join(PRIOR_CHOICES)}, got '{prior}'")
    target = getattr(model, "target", "") or ""
    if isinstance(model, AtlasTarget):
        return target_objects(target)
    if prior == "off":
        return ()
    objects = target_objects(target)
    if prior == "on" and not objects:
        raise InputError(f"--prior on: no atlas has the target '{target}'")
    return objects


def apply_prior(volume, hu: np.ndarray, coarse: np.ndarray, model, prior: str = "auto", *,
                progress=None, cancel=None) -> PriorOutcome:
    """``coarse``: the U-Net's uint8 mask, canonical (z, y, x) like ``hu`` (HU). Returns it unchanged
    (sources 'unet') when the prior does not apply; else the mask rebuilt per object (see the module
    docstring)."""
    from polycl.atlas.prior import combine, compute_prior
    from polycl.orientation import orientation

    objects = wanted(model, prior)
    orient = orientation(volume)
    voxel_ml = float(np.prod(orient.spacing_xyz)) / 1000.0
    unet_only = PriorOutcome(coarse, [] if not np.any(coarse) else [{"organ": getattr(model, "target", ""),
                                                                      "source": "unet"}])
    if not objects or (prior == "auto" and _plausible_single(objects, coarse, hu, voxel_ml, orient)):
        return unet_only
    t0 = time.perf_counter()
    try:
        pr = compute_prior(volume, objects, progress=progress, cancel=cancel)
    except InputError as exc:  # e.g. no body in the image: 'auto' keeps the U-Net's mask and says why
        if prior == "on" or isinstance(model, AtlasTarget):
            raise
        for src in unet_only.sources:
            src["note"] = f"atlas prior skipped: {exc}"
        return unet_only
    masks = {o: orient.to_canonical(pr.mask(o)) > 0 for o in objects}
    unet = None if isinstance(model, AtlasTarget) else coarse
    kept, sources = combine(unet, masks, hu, voxel_ml)
    # the other organs' priors tell a drawn object from its neighbours: only needed when one is drawn
    others = _other_organs(volume, objects, orient) if any(s.source == "prior" for s in sources) else {}
    out = np.zeros_like(coarse, dtype=np.uint8)
    for m in kept:
        out[m] = 1
    seconds = time.perf_counter() - t0
    return PriorOutcome(out, [{"organ": s.organ, "source": s.source, "dropped": s.dropped, "ml": round(s.ml, 1),
                               "prior_s": round(seconds, 1)} for s in sources], seconds, "; ".join(pr.steps),
                        [m > 0 for m in kept], others)


def _other_organs(volume, objects, orient) -> dict:
    """The priors of the atlas organs other than ``objects`` (canonical bool masks), from the registration
    just made (cached: only the warping runs); {} when no atlas has them all."""
    from polycl.atlas.prior import compute_prior
    from polycl.atlas.store import atlas_organs

    rest = [o for o in atlas_organs() if o not in objects]
    if not rest:
        return {}
    try:
        pr = compute_prior(volume, rest)
    except InputError:
        return {}
    return {o: orient.to_canonical(pr.mask(o)) > 0 for o in rest}


def _plausible_single(objects, coarse, hu, voxel_ml: float, orient) -> bool:
    """'auto' for a one-object target (the liver): True (no prior needed) when the U-Net's mask is
    plausible for the organ in volume and HU (:func:`polycl.atlas.prior.plausible`; a scan shorter than
    150 mm is allowed a proportionally smaller organ). Several objects (kidneys) always get the prior:
    finding which is which and where is what the U-Net fails at on new scans."""
    from polycl.atlas.prior import plausible

    if len(objects) != 1 or not np.any(coarse):
        return False
    coverage = min(1.0, hu.shape[0] * orient.spacing_xyz[2] / 150.0)
    return plausible(objects[0], coarse > 0, hu, voxel_ml, coverage)


def sources_text(sources: list) -> str:
    """'objects: kidney_right from prior (drawn from the image, seed slice 34), kidney_left from both (1 U-Net
    piece(s) dropped)' for a report line."""
    if not sources:
        return ""
    parts = []
    for s in sources:
        extra = f" (drawn from the image, seed slice {s['seed']})" if "seed" in s else ""
        extra += f" ({s['dropped']} U-Net piece(s) dropped)" if s.get("dropped") else ""
        extra += f" ({s['note']})" if s.get("note") else ""
        parts.append(f"{s['organ']} from {s['source']}{extra}")
    return "objects: " + ", ".join(parts)
