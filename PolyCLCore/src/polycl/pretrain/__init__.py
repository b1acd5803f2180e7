"""PolyCL contrastive pre-training (the method's contribution).

* :mod:`~polycl.pretrain.dataset`: slices of CT scans with scan id, slice index and organ presence
  (from labels or a ``case,slice,present`` CSV), preprocessed once and cached;
* :mod:`~polycl.pretrain.samplers`: example selection S, O and M, checked against the data before
  training (:class:`StrategyError` with what to do);
* :mod:`~polycl.pretrain.loss`: the PolyCL loss (cosine similarity, one positive and one negative
  per anchor, tau = 1/M);
* :mod:`~polycl.pretrain.train`: the training loop (checkpoints, resume, loss curve, AMP, DDP).

Typical use::

    from polycl.pretrain import find_scans, build_slice_dataset, PretrainConfig, pretrain
    data = build_slice_dataset(find_scans("ct/", labels_dir="labels/"))
    pretrain(data, "encoder.pt", PretrainConfig(strategy="m", epochs=100))
"""

from polycl.pretrain.dataset import (  # noqa: F401
    ABSENT, PRESENT, UNKNOWN, Scan, SliceDataset, SliceSelection, build_slice_dataset, find_scans, read_presence_csv,
)
from polycl.pretrain.loss import default_tau, polycl_loss  # noqa: F401
from polycl.pretrain.samplers import STRATEGIES, SamplingPlan, StrategyError, TripletSampler  # noqa: F401
from polycl.pretrain.train import PolyCLNet, PretrainConfig, PretrainResult, pretrain  # noqa: F401
