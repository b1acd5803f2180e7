"""Propagation of annotated slice(s) through a CT volume: SAM 2 video predictor or chained LiteMedSAM.

One entry point, :func:`run` (see :mod:`polycl.propagate.api`)::

    from polycl import propagate
    result = propagate.run(volume, seed_mask, propagate.PropagateOptions(engine="auto"),
                           seed_slices=[k], progress=cb, cancel=token)   # bad input raises before any work
    result.mask                      # uint8 (z, y, x) on the input grid
    result.engine.name, result.engine.reason, result.describe_objects()

The rest are its parts: seeds (:mod:`~polycl.propagate.seeds`), stop rules, engine choice.
"""

from polycl.propagate.api import PropagateOptions, PropagationResult, run
from polycl.propagate.seeds import (Seed, box_from_mask, canonical_slice_index, input_slice_index,
                                    reference_slice, seeds_from_mask)
from polycl.propagate.stop import StopRule
from polycl.propagate.stream import ENGINES, EngineChoice, choose_engine

__all__ = ["ENGINES", "EngineChoice", "PropagateOptions", "PropagationResult", "Seed", "StopRule", "box_from_mask",
           "canonical_slice_index", "choose_engine", "input_slice_index", "reference_slice", "run",
           "seeds_from_mask"]
