"""PolyCLCore: contrastive pre-training, U-Net segmentation and SAM refinement for CT.

This package is pure Python + numpy/torch/SimpleITK/MONAI/scikit-image. It never imports
slicer, qt or vtk: the Slicer module passes numpy arrays and a :class:`~polycl.volume.Geometry`.
Arrays are always (z, y, x); spacing/origin/direction follow SimpleITK (x, y, z; LPS; mm).
"""

__version__ = "0.1.0"

from polycl.errors import PolyCLError  # noqa: F401
from polycl.volume import Geometry, Volume  # noqa: F401
