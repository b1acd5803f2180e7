"""The atlas prior inside Segment: the one hook :func:`polycl.pipeline.segment_case` calls (issue 19).

* :class:`AtlasTarget`: a target with no network (``polycl segment --target spleen``): the warped
  atlas organ is the coarse mask, which the pipeline then seeds with SAM and propagates.
* :func:`apply_prior`: after the U-Net (or instead of it), per object of the target: U-Net components
  that miss the organ's prior or are implausible are dropped, and an object the U-Net did not find
  plausibly is taken from the prior. Returns the new coarse mask and each object's source.

``SegmentOptions.prior``: ``auto`` (default: on for targets an atlas has, i.e. liver, kidneys, spleen
with the bundled atlas), ``on`` (an error when no atlas has the target) or ``off``. With ``auto`` a U-Net
object that overlaps its prior and is plausible is kept exactly as the U-Net drew it, so the prior
changes only objects the U-Net got implausibly wrong or missed.
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
    """Stands where a loaded U-Net would: ``target`` (an atlas organ name or 'kidney'), ``components``
    (objects), ``entry.name`` ('atlas:<target>') and ``device`` for the CLI's line."""

    target: str
    components: int = 1
    device: str = "cpu"
    entry: _Entry = field(default_factory=lambda: _Entry(""))
    atlas_only: bool = True

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
    ml); ``seconds``: registration + warping; ``note``: registration log."""

    coarse: np.ndarray
    sources: list = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""


def wanted(model, prior: str) -> tuple[str, ...]:
    """The atlas objects the prior covers for ``model``'s target under option ``prior``; () when off."""
    from polycl.atlas.store import target_objects

    if prior not in PRIOR_CHOICES:
        raise InputError(f"prior must be one of {', '.join(PRIOR_CHOICES)}, got '{prior}'")
    target = getattr(model, "target", "") or ""
    if getattr(model, "atlas_only", False):
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
    if not objects:
        src = [] if not np.any(coarse) else [{"organ": getattr(model, "target", ""), "source": "unet"}]
        return PriorOutcome(coarse, src)
    t0 = time.perf_counter()
    pr = compute_prior(volume, objects, progress=progress, cancel=cancel)
    orient = orientation(volume)
    masks = {o: orient.to_canonical(pr.mask(o)) > 0 for o in objects}
    voxel_ml = float(np.prod(orient.spacing_xyz)) / 1000.0
    unet = None if getattr(model, "atlas_only", False) else coarse
    kept, sources = combine(unet, masks, hu, voxel_ml)
    out = np.zeros_like(coarse, dtype=np.uint8)
    for m in kept:
        out[m] = 1
    return PriorOutcome(out, [{"organ": s.organ, "source": s.source, "dropped": s.dropped, "ml": round(s.ml, 1)}
                              for s in sources], time.perf_counter() - t0, "; ".join(pr.steps))


def sources_text(sources: list) -> str:
    """'objects: kidney_right from prior, kidney_left from both (1 U-Net piece dropped)' for a report line."""
    if not sources:
        return ""
    parts = []
    for s in sources:
        extra = f" ({s['dropped']} U-Net piece(s) dropped)" if s.get("dropped") else ""
        parts.append(f"{s['organ']} from {s['source']}{extra}")
    return "objects: " + ", ".join(parts)
