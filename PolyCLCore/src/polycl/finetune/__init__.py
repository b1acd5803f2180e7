"""Fine-tuning a segmentation U-Net on a folder of labelled CT (``polycl finetune``).

The paper's recipe: a (PolyCL-pretrained or random) encoder, a mirrored decoder, Dice loss,
Adam at lr 1e-3, batch 10, cosine annealing with warm restarts; here with MONAI augmentation,
a case-level train/validation split, validation Dice every epoch, the best checkpoint kept,
a resumable state saved every epoch (and on Ctrl-C or Cancel) and a training-curve PNG.

* :mod:`~polycl.finetune.config`: :class:`FinetuneConfig`, validated before anything is read;
* :mod:`~polycl.finetune.data`: :func:`check_training_folder` (the one input check, also used by the
  Slicer panel and the web page), case loading, the split, slice datasets and global batches;
* :mod:`~polycl.finetune.augment`: MONAI augmentation ("standard" or "strong");
* :mod:`~polycl.finetune.job`: the U-Net, loss, validation and outputs, as a job of the training
  loop shared with pre-training (:mod:`polycl.training`: resume, DDP, progress, cancel, teardown);
* :mod:`~polycl.finetune.run`: :func:`finetune`, which ties them together.
"""

from polycl.finetune.augment import augmentations  # noqa: F401
from polycl.finetune.config import FinetuneConfig, parse_target  # noqa: F401
from polycl.finetune.data import (  # noqa: F401
    CaseSlices, SliceDataset, check_training_folder, load_case, load_cases, read_case, split_cases,
)
from polycl.finetune.job import FinetuneJob, build_model, global_batch_loss, make_loss, validation_dice  # noqa: F401
from polycl.finetune.run import FinetuneResult, finetune, write_model_json  # noqa: F401
from polycl.training.batches import GlobalBatchSampler  # noqa: F401
