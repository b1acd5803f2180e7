"""Registrations kept within a process, so one CT is registered to an atlas set once.

A Slicer session or the web app often runs Segment on the same CT more than once (kidneys, then
``--target spleen``; a rerun with other SAM settings). The registration does not depend on the
target, so :func:`polycl.atlas.prior.compute_prior` looks its registrations up here first.

Key: the CT's :meth:`~polycl.volume.Volume.fingerprint` (voxels + grid), the fingerprints of the
atlas images that vote (the atlas set, in order) and the :class:`RegistrationOptions` values.
A small LRU (:data:`MAX_ENTRIES` CTs, each with its list of registrations, about 1 MB each); thread
safe (Slicer's worker thread and the web app's). Cancelled or failed registrations are never stored.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import astuple

MAX_ENTRIES = 2
_LOCK = threading.Lock()
_ENTRIES: OrderedDict = OrderedDict()
_COUNTS = {"hits": 0, "misses": 0}


def key(volume, atlas_images, options) -> tuple:
    """The cache key of registering ``volume`` to ``atlas_images`` (Volumes) with ``options``."""
    return volume.fingerprint(), tuple(a.fingerprint() for a in atlas_images), astuple(options)


def get(k: tuple):
    """The registrations stored under ``k`` (most recently used now), or None."""
    with _LOCK:
        regs = _ENTRIES.get(k)
        _COUNTS["hits" if regs is not None else "misses"] += 1
        if regs is not None:
            _ENTRIES.move_to_end(k)
        return regs


def put(k: tuple, registrations: list) -> None:
    with _LOCK:
        _ENTRIES[k] = list(registrations)
        _ENTRIES.move_to_end(k)
        while len(_ENTRIES) > MAX_ENTRIES:
            _ENTRIES.popitem(last=False)


def clear() -> None:
    with _LOCK:
        _ENTRIES.clear()
        _COUNTS.update(hits=0, misses=0)


def info() -> dict:
    """{'hits': n, 'misses': n, 'entries': n} since the last :func:`clear`."""
    with _LOCK:
        return dict(_COUNTS, entries=len(_ENTRIES))
