"""Propagation of annotated slice(s) through a CT volume: SAM 2 video predictor or chained LiteMedSAM.

One entry point, :func:`run` (see :mod:`polycl.propagate.api`)::

    from polycl import propagate
    result = propagate.run(volume, seed_mask, propagate.PropagateOptions(engine="auto"),
                           seed_slices=[k], progress=cb, cancel=token)   # bad input raises before any work
    result.mask                      # uint8 (z, y, x) on the input grid
    result.engine.name, result.engine.reason, result.describe_objects()

The rest are its parts: seeds (:mod:`~polycl.propagate.seeds`), stop rules, engine choice, and the
seams other packages build on: :func:`prepare` (a propagation as a stream of slices, what the
interactive fill consumes), :func:`make_engine` and :func:`default_rule` (Segment's pipeline).
"""

from polycl.propagate.api import PropagateOptions, PropagationResult, run
from polycl.propagate.seeds import (Seed, canonical_slice_index, input_slice_index,
                                    reference_slice, seeds_from_mask)
from polycl.propagate.stop import StopRule
from polycl.propagate.stream import ENGINES, EngineChoice, choose_engine, default_rule, make_engine, prepare

__all__ = ["ENGINES", "EngineChoice", "PropagateOptions", "PropagationResult", "Seed", "StopRule",
           "canonical_slice_index", "choose_engine", "default_rule", "input_slice_index", "make_engine", "prepare",
           "reference_slice", "run", "seeds_from_mask"]
