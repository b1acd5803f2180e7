"""Propagation of annotated slice(s) through a CT volume: SAM 2 video predictor or chained LiteMedSAM.

>>> run = propagate(volume, seed_mask, engine="auto")      # errors on bad input raise here
>>> print(run.engine.name, run.engine.reason)
>>> for index, mask, confidence, obj in run: ...           # canonical slices, as they are made, per object
>>> result = propagate_volume(volume, seed_mask, progress=cb, cancel=token)  # polycl.progress
>>> result.mask                                            # uint8 (z, y, x) on the input grid
"""

from polycl.propagate.api import (ENGINES, EngineChoice, PropagatedSlice, Propagation, PropagationResult,
                                  choose_engine, make_engine, propagate, propagate_volume)
from polycl.propagate.seeds import (Seed, box_from_mask, canonical_slice_index, input_slice_index,
                                    reference_slice, seeds_from_mask)
from polycl.propagate.stop import StopRule

__all__ = ["ENGINES", "EngineChoice", "PropagatedSlice", "Propagation", "PropagationResult", "Seed", "StopRule",
           "box_from_mask", "canonical_slice_index", "choose_engine", "input_slice_index", "make_engine", "propagate",
           "propagate_volume", "reference_slice", "seeds_from_mask"]
