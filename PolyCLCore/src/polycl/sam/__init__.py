"""SAM box/point prompts on CT: bundled LiteMedSAM, user-downloaded SAM/MedSAM, interactive API,
per-slice box refinement (:mod:`polycl.sam.slice_refine`; the whole-volume operation is :func:`polycl.refine.run`).

Heavy imports (segment_anything, the TinyViT encoder) happen when a model is first loaded.
"""

from polycl.sam.slice_segmenter import SAM_WINDOW, SegmenterCache, SliceSegmenter, window_to_uint8
from polycl.sam.predictor import LoadedSam, load_sam
from polycl.sam.weights import BACKENDS, SAM_CHECKPOINTS, SamCheckpoint, checkpoint_path

__all__ = ["BACKENDS", "SAM_CHECKPOINTS", "SAM_WINDOW", "LoadedSam", "SamCheckpoint", "SegmenterCache", "SliceSegmenter",
           "checkpoint_path", "load_sam", "window_to_uint8"]
