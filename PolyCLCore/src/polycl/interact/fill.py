"""The propagation steps of :class:`~polycl.interact.session.InteractiveSession` (canonical space).

:func:`fill` carries the fixed slices through the volume with the propagation engine (each
connected object of each fixed slice is a seed; several fixed slices: multi-seed, each stretch
between two seeds chained from its nearer one, SAM 2: ``add_new_mask`` on every seed frame).
:func:`local` re-propagates from corrected slices only as far as the result changes
(:mod:`polycl.propagate.local`). Both write into ``work`` ((z, y, x) uint8, canonical) and return
{canonical slice: confidence} of the slices they wrote; fixed slices are restored by the caller.
"""

from __future__ import annotations

import numpy as np

from polycl.progress import Reporter

#: The fill's stop rule adds to the engine's default: a slice under this fraction of the seed's
#: area has vanished (measured on example_ct: the liver's tip otherwise ran on for 24 slices into
#: a thin neighbour, 1,600 wrong voxels; stopping there costs a few tip voxels).
FILL_MIN_AREA_FRACTION = 0.05


def fill_rule(engine: str):
    """The stop rule of the session's fill: the engine's default plus :data:`FILL_MIN_AREA_FRACTION`."""
    from dataclasses import replace

    from polycl.propagate import default_rule

    return replace(default_rule(engine), min_area_fraction=FILL_MIN_AREA_FRACTION)


def _seeds(session):
    from polycl.propagate.seeds import seeds_from_mask

    vol = np.zeros(session.hu.shape, np.uint8)
    fixed = session.fixed_masks
    ks = [k for k, m in fixed.items() if m.any()]
    for k in ks:
        vol[k] = fixed[k]
    return seeds_from_mask(vol, ks) if ks else []


def _engine_run(session, seeds, report: Reporter, work: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """The engine's whole propagation from ``seeds``: (canonical (z, y, x) uint8, confidences)."""
    from polycl.propagate import PropagateOptions
    from polycl.propagate import prepare

    options = PropagateOptions(engine=session.engine_choice.name, check_ct=False)
    run = prepare(session.volume, seeds, options, hu=session.hu, rule=fill_rule(session.engine_choice.name),
                  segmenter=session.segmenter)
    out = np.zeros(session.hu.shape, np.uint8) if work is None else work
    conf: dict[int, float] = {}
    for i, item in enumerate(run):
        out[item.index] |= item.mask
        conf[item.index] = min(conf.get(item.index, 1.0), item.confidence) if item.mask.any() else \
            conf.get(item.index, 0.0)
        report(i + 1, run.n_slices, f"propagating, slice {item.index} (axial order)")
    if run.engine.name == "chain":
        session.chain_engine = run.runner
    return out, conf


def fill(session, work: np.ndarray, report: Reporter) -> dict[int, float]:
    """First propagation: ``work`` is replaced by the engine's result from the fixed slices."""
    seeds = _seeds(session)
    work[:] = 0
    if not seeds:
        return {}
    _, conf = _engine_run(session, seeds, report, work)
    return conf


def _chain(session):
    """The chain engine that walks corrections, its HU range taken from the fixed slices."""
    from polycl.propagate.chain_engine import ChainEngine

    if session.chain_engine is None:
        session.chain_engine = ChainEngine(session.segmenter.loaded, device=session.segmenter.device,
                                     segmenter=session.segmenter)
    masks = {k: m for k, m in session.fixed_masks.items() if m.any()}
    if masks and session.chain_engine.hu_range is None:  # else keep the fill's range: the walk then redoes its steps
        session.chain_engine.set_hu_range(session.hu, masks)
    return session.chain_engine


def _objects_of(prev: np.ndarray, old_labels: np.ndarray) -> list[np.ndarray]:
    """``prev`` split into the objects of the old result: pixels grouped by the old mask's 3D
    component (``old_labels``, the prev slice's labels) they lie in; pixels outside every old
    component join the nearest one, or form one new object when there is none on the slice."""
    from skimage.segmentation import expand_labels

    lab = np.where(prev, old_labels, 0)
    if not lab.any():
        return [prev]
    lab = expand_labels(lab, distance=max(prev.shape)) * prev
    return [lab == v for v in np.unique(lab[lab > 0])]


def local(session, work: np.ndarray, pending: list[int], report: Reporter) -> dict[int, float]:
    """Re-propagate from each slice of ``pending`` only as far as the result changes."""
    from polycl.propagate.local import repropagate_locally
    from polycl.propagate import default_rule

    if not pending:
        return {}
    fixed = set(session.fixed_masks)
    for k, m in session.fixed_masks.items():
        work[k] = m
    sy, sx = session.pixel_mm
    if session.engine_choice.name == "chain":
        from scipy import ndimage

        chain, rule = _chain(session), default_rule("chain")
        old_labels, _ = ndimage.label(work > 0, structure=np.ones((3, 3, 3)))

        def step(j, i, prev):
            new, conf = chain.next_slice(session.hu, j, prev, rule, sx * sy, prev_index=i,
                                         objects=_objects_of(prev, old_labels[i]))
            if np.count_nonzero(new) < FILL_MIN_AREA_FRACTION * ref_area[0]:  # the fill's rule: the tip ends here
                return np.zeros_like(new), 0.0
            return new, conf
    else:  # SAM 2: one run with every fixed slice as a conditioning frame, taken as far as it changes
        seeds = _seeds(session)
        new, conf_all = _engine_run(session, seeds, report, None) if seeds else (np.zeros_like(work), {})

        def step(j, i, prev):
            return new[j] > 0, conf_all.get(j, 0.0)
    conf: dict[int, float] = {}
    ref_area = [0]
    for i, k in enumerate(pending):
        report(i, len(pending), f"re-propagating from slice {k} (axial order)")
        ref_area[0] = int(np.count_nonzero(work[k]))
        conf.update(repropagate_locally(work, k, step, fixed, check=report.check))
    return conf
