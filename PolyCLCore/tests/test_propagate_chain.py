"""Offline chaining engine (bundled LiteMedSAM) on real CT: seed = the liver label's middle slice,
propagate both ways with the default stop rule, Dice against the label.

Thresholds sit just under what was measured on 2 CPU cores (docs/propagation.md): a drop below
means the chaining or the stop rule got worse. The labels are TotalSegmentator model outputs.
"""

from __future__ import annotations

import numpy as np
from conftest import dice
from polycl.propagate import PropagateOptions, input_slice_index, reference_slice, run
from polycl.propagate.seeds import canonical_mask

#: Measured Dice (chain engine, LiteMedSAM, default CHAIN_RULE) minus a small margin.
MIN_DICE_EXAMPLE_CT = 0.89  # measured 0.905
# example_ct_dicom (measured 0.974) is guarded through the CLI in test_propagate_cli.py.


def test_chain_propagates_the_liver_of_example_ct_and_stops(abdomen, abdomen_segmenter):
    """On the slab of example_ct with the liver and kidneys (conftest ``abdomen``, slices 58..111: the
    liver's 43 slices reach its top, 11 slices below them), sharing the session's SliceSegmenter with
    test_propagate_objects.py. The run visits the same slices and gives the same Dice as on the whole
    volume (0.904), since it stops 3 slices below the liver at the latest (asserted below)."""
    volume, labels = abdomen
    liver = (labels == 5).astype(np.uint8)
    k = input_slice_index(volume, reference_slice(canonical_mask(volume, liver)))
    res = run(volume, liver, PropagateOptions(engine="chain", device="cpu"), seed_slices=[k],
              segmenter=abdomen_segmenter)
    assert res.engine.name == "chain"
    d = dice(res.mask, liver)
    assert d >= MIN_DICE_EXAMPLE_CT, d
    # the stop rule ends the run near the organ: naive chaining ran through 112 slices (docs/propagation.md),
    # here it would run through all 54 of the slab
    label_slices = np.flatnonzero(liver.any(axis=(1, 2)))
    mask_slices = np.flatnonzero(res.mask.any(axis=(1, 2)))
    assert mask_slices.min() >= label_slices.min() - 3 and mask_slices.max() <= label_slices.max() + 3
    assert len(res.visited) <= len(label_slices) + 2 * 3 + 2 < volume.shape[0]
