"""Training shared by fine-tuning (:mod:`polycl.finetune`) and pre-training (:mod:`polycl.pretrain`).

* :mod:`~polycl.training.loop`: the one loop (:func:`fit` runs a :class:`Job`): one resumable state
  format, epochs numbered from 1, DDP under torchrun with teardown in ``finally``, progress and cancel;
* :mod:`~polycl.training.curves`: the training-curve PNGs.
"""

from polycl.training.curves import plot_history  # noqa: F401
from polycl.training.loop import FitResult, Job, fit, read_state  # noqa: F401
