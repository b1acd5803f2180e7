"""Scoring on the clinical validation scan by side of the body (conftest ``clinical``). A module of its
own: both test folders have a ``conftest``, and one pytest run imports only one of them by that name."""

import numpy as np


def sides(mask: np.ndarray) -> dict:
    """``mask`` (z, y, x) on the clinical scan's grid split at its middle column into the patient's
    right half (low x: the scan's direction is the identity, LPS) and left half, so that each kidney is
    scored with whatever a result put on its side."""
    mid = mask.shape[2] // 2
    right, left = np.zeros_like(mask), np.zeros_like(mask)
    right[..., :mid], left[..., mid:] = mask[..., :mid], mask[..., mid:]
    return {"rightkidney": right, "leftkidney": left}
