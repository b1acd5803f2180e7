"""Local re-propagation: carry a corrected slice outwards only as far as the result changes.

After a volume has been filled by propagation, a user corrects slice k. Re-running the whole
propagation would redo every slice (and could move slices the user already accepted); instead
:func:`repropagate_locally` walks from k in both directions, each new slice made from the previous
new slice (the chain engine's box step, per object), and stops in a direction

* when the new slice agrees with the old result (2D Dice >= :data:`AGREE_DICE`) on
  :data:`AGREE_SLICES` consecutive slices: from there on the old result is kept;
* at a fixed (corrected) slice, which is never overwritten;
* at the limits of the volume.

When the new walk loses the organ (an empty slice) while the old result still continues towards
the organ's tail (no fixed slice that way, fewer voxels that way than on the other side), the old
result's pieces connected in 3D to what was just removed are removed too (a leak the correction
cut off stops everywhere it had spread to), up to the next fixed slice; towards the organ's bulk
the old result is kept.

Everything is in canonical slice space (see :mod:`polycl.propagate.seeds`): ``mask`` is a
(z, y, x) bool/uint8 array, slices are canonical axial indices.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from polycl.masks import dice

#: Two slices agree when their 2D Dice is at least this.
AGREE_DICE = 0.98
#: A direction ends after this many agreeing slices in a row.
AGREE_SLICES = 2
#: Towards the organ's tail, this many vanished (empty) new slices in a row end it (the engines' K).
STOP_AFTER = 3


def repropagate_locally(mask: np.ndarray, k: int, step: Callable[[int, int, np.ndarray], tuple[np.ndarray, float]],
                        fixed: set[int], *, check: Callable[[], None] | None = None,
                        agree_dice: float = AGREE_DICE, agree_slices: int = AGREE_SLICES,
                        stop_after: int = STOP_AFTER) -> dict[int, float]:
    """Re-propagate ``mask`` (canonical (z, y, x), changed in place) outwards from slice ``k``.

    ``step(j, i, prev)`` makes slice ``j``'s new (y, x) bool mask from ``prev``, the last non-empty
    new mask (made on slice ``i``), and returns (mask, confidence); an empty answer means the organ
    vanished there. ``fixed``: canonical slices never overwritten. ``check()`` is called before each
    slice (a cancel token's check). Vanished slices: towards the organ's bulk the walk stops and keeps
    the old result; towards its tail, after ``stop_after`` vanished slices in a row the organ has
    ended and the old pieces connected beyond are removed. Returns {slice: confidence} of the slices
    written (their new mask may equal the old one).
    """
    z = mask.shape[0]
    written: dict[int, float] = {}
    for direction in (1, -1):
        prev, prev_index = mask[k] > 0, k
        agree = vanished = 0
        j = k + direction
        while 0 <= j < z and j not in fixed:
            if check is not None:
                check()
            old = mask[j] > 0
            new, conf = step(j, prev_index, prev) if prev.any() else (np.zeros_like(prev), 0.0)
            if new.any():
                vanished, prev, prev_index = 0, new, j
            elif old.any() and not _is_tail(mask, k, direction, fixed):
                break  # losing the organ towards its bulk: keep the old result from here
            else:
                vanished += 1
            mask[j] = new
            written[j] = conf
            agree = agree + 1 if dice(new, old) >= agree_dice else 0
            if agree >= agree_slices:
                break
            if vanished >= stop_after or (vanished and not prev.any()):
                if old.any() or (0 <= j + direction < z and mask[j + direction].any()):
                    _remove_connected(mask, j, old, direction, fixed, written)
                break
            j += direction
    return written


def _is_tail(mask: np.ndarray, k: int, direction: int, fixed: set[int]) -> bool:
    """True when the side of slice ``k`` in ``direction`` is the organ's tail: no fixed slice there
    and fewer mask voxels there than on the other side (a leak the correction cut off, not the organ)."""
    if any((f - k) * direction > 0 for f in fixed):
        return False
    ahead = mask[k + direction:] if direction > 0 else mask[:k]
    behind = mask[:k] if direction > 0 else mask[k + 1:]
    return int(np.count_nonzero(ahead)) < int(np.count_nonzero(behind))


def _remove_connected(mask: np.ndarray, j: int, removed: np.ndarray, direction: int, fixed: set[int],
                      written: dict[int, float]) -> None:
    """Clear, beyond slice ``j``, the old pieces 3D-connected to ``removed`` (slice ``j``'s old mask),
    stopping before a fixed slice."""
    from scipy import ndimage

    z = mask.shape[0]
    stop = next((f for f in (sorted(fixed) if direction > 0 else sorted(fixed, reverse=True))
                 if (f - j) * direction > 0), z if direction > 0 else -1)
    lo, hi = (j, stop) if direction > 0 else (stop + 1, j + 1)
    block = mask[lo:hi] > 0
    jj = j - lo
    block[jj] = removed
    lab, _ = ndimage.label(block, structure=np.ones((3, 3, 3)))
    ids = np.unique(lab[jj][removed])
    gone = np.isin(lab, ids[ids > 0])
    gone[jj] = False
    for i in np.flatnonzero(gone.reshape(gone.shape[0], -1).any(axis=1)):
        mask[lo + i][gone[i]] = 0
        written.setdefault(lo + i, 0.0)
