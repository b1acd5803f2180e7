"""What an organ's size and density can plausibly be in adult abdominal CT: one table that
Segment's results, batch reports and ``polycl atlas add`` are checked against.

The bounds are deliberately wide (they flag a result or an atlas label that is wrong, e.g. a liver
mask stored as "spleen", not disease): normal adult volumes are about liver 1.0-2.5 l, spleen
0.1-0.4 l, each kidney 0.1-0.25 l (Heymsfield et al. 1979; Prassopoulos et al. 1997; Emamian et al.
1993); the bounds allow for marked hepatomegaly and splenomegaly and for children's smaller organs.
HU: the organ's median in plain or contrast-enhanced CT lies well inside -50..400 HU.
"""

from __future__ import annotations

#: organ -> (min ml, max ml). "kidney": both kidneys together.
PLAUSIBLE_ML = {
    "liver": (400.0, 5000.0),
    "spleen": (20.0, 2000.0),
    "kidney_left": (30.0, 600.0),
    "kidney_right": (30.0, 600.0),
    "kidney": (30.0, 1200.0),
    "kidneys": (30.0, 1200.0),
}
#: Plausible median HU of a soft-tissue organ (plain or contrast-enhanced CT).
PLAUSIBLE_MEDIAN_HU = (-50.0, 400.0)


def volume_warning(organ: str | None, ml: float) -> str | None:
    """A one-line warning when a result of ``ml`` millilitres is more than ``organ`` plausibly holds
    (it took in a neighbour); None when it is not, or when the table has no bounds for the organ. A
    small result is not flagged: a scan that covers part of the organ gives one legitimately."""
    bounds = PLAUSIBLE_ML.get((organ or "").lower())
    if bounds is None or ml <= bounds[1]:
        return None
    return (f"check the result: {ml:.0f} ml is more than a {organ.replace('_', ' ')} plausibly holds "
            f"({bounds[0]:.0f}-{bounds[1]:.0f} ml)")


def organ_problem(organ: str, ml: float, median_hu: float) -> str | None:
    """Why a labelled organ (an atlas's, which must be whole) is not plausible: its volume outside the
    table's bounds, or its median HU; None when it is plausible or the organ is not in the table."""
    bounds = PLAUSIBLE_ML.get(organ.lower())
    if bounds is not None and not bounds[0] <= ml <= bounds[1]:
        return f"{organ}: {ml:.0f} ml (a whole {organ.replace('_', ' ')} holds {bounds[0]:.0f}-{bounds[1]:.0f} ml)"
    lo, hi = PLAUSIBLE_MEDIAN_HU
    if not lo <= median_hu <= hi:
        return f"{organ}: median {median_hu:.0f} HU (a soft-tissue organ lies within {lo:.0f}..{hi:.0f} HU)"
    return None
