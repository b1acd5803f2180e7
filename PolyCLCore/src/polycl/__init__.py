"""PolyCLCore: contrastive pre-training, U-Net segmentation and SAM refinement for CT.

This package is pure Python + numpy/torch/SimpleITK/MONAI/scikit-image. It never imports
slicer, qt or vtk: the Slicer module passes numpy arrays and a :class:`~polycl.volume.Geometry`.
Arrays are always (z, y, x); spacing/origin/direction follow SimpleITK (x, y, z; LPS; mm); SAM's
prompts on one slice are (x, y) points and (x0, y0, x1, y1) boxes in pixels (:mod:`polycl.sam`).

Where things are, by role:

* operations, one public ``run`` each: :mod:`polycl.segment` (with its pipeline,
  :mod:`polycl.segment.pipeline`), :mod:`polycl.refine`, :mod:`polycl.propagate`; folders of
  cases: :func:`polycl.batch.run_batch`;
* clicks and corrections on a CT: :mod:`polycl.interact` (a session, its slice answers, the
  simulated user);
* SAM on one slice: :mod:`polycl.sam` (:mod:`~polycl.sam.slice_segmenter`, box refinement of one
  slice in :mod:`~polycl.sam.slice_refine`);
* atlas-based location and targets: :mod:`polycl.atlas`;
* training: :mod:`polycl.pretrain`, :mod:`polycl.finetune`, both on :mod:`polycl.training`;
* files: a *checkpoint* is a file polycl writes (:mod:`polycl.checkpoint`, the model registry
  :mod:`polycl.models`); *weights* are third-party files it downloads or finds
  (:mod:`polycl.sam.weights`, :mod:`polycl.propagate.sam2_weights`, through :mod:`polycl.download`).
"""

__version__ = "0.1.0"

from polycl.errors import PolyCLError  # noqa: F401
from polycl.volume import Geometry, Volume  # noqa: F401
