"""Mask clean-up with scikit-image: connected components in 3D."""

from __future__ import annotations

import numpy as np
from skimage import measure


def largest_components(mask: np.ndarray, keep: int = 1, min_fraction: float = 0.0) -> np.ndarray:
    """Keep the ``keep`` largest 3D connected components (26-connectivity) of a binary mask.

    Components smaller than ``min_fraction`` of the largest are dropped even when within ``keep``
    (kidneys: keep=2, min_fraction=0.2 keeps both kidneys but not a small false island).
    """
    labels = measure.label(mask > 0, connectivity=3)
    if labels.max() <= 1:
        return (labels > 0).astype(np.uint8)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    order = np.argsort(sizes)[::-1][:keep]
    order = [i for i in order if sizes[i] > 0 and sizes[i] >= min_fraction * sizes[order[0]]]
    return np.isin(labels, order).astype(np.uint8)
