"""Networks: PolyCL encoders, the projection head and the segmentation U-Net.

Every encoder maps (N, 1, H, W) to a list of feature maps at strides 1, 2, 4, ... and exposes
``channels`` (one entry per map), so any encoder can be the contracting half of the U-Net.
Build networks from plain config dicts (stored in checkpoints) with :func:`build_encoder` and
:func:`build_segmentation_model`.
"""

from polycl.networks.encoders import ENCODERS, UNetEncoder, build_encoder  # noqa: F401
from polycl.networks.heads import ProjectionHead  # noqa: F401
from polycl.networks.unet import SegmentationUNet, build_segmentation_model  # noqa: F401
