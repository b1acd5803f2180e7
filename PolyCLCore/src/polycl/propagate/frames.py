"""CT slices as SAM 2 video frames, computed from memory (never written to JPEG).

SAM 2's ``init_state`` only reads a JPEG folder or an MP4 file; both would squeeze the HU window into
8-bit lossy pixels and cost disk time. :class:`CTFrames` gives the video predictor what
``sam2.utils.misc.load_video_frames`` would have produced, frame by frame, straight from the HU array:
the paper's window (level 40 / width 400 HU) scaled to 0..1, the grey value repeated in the 3 RGB
channels, resized to the model's square input (``image_size``, 1024 for the official checkpoints) and
normalised with the ImageNet mean/std that SAM 2 uses (``img_mean``/``img_std`` of ``load_video_frames``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from polycl.preprocess import CT_WINDOW, window

#: Normalisation of ``sam2.utils.misc.load_video_frames`` (ImageNet statistics, on 0..1 pixels).
SAM2_IMG_MEAN = (0.485, 0.456, 0.406)
SAM2_IMG_STD = (0.229, 0.224, 0.225)


class CTFrames:
    """A lazy sequence of SAM 2 frames over axial HU slices.

    ``hu``: (z, y, x) HU array in canonical (LPS) order. ``frames[i]`` is a (3, image_size, image_size)
    float32 tensor on the CPU (the predictor moves it to its device), computed when first asked for;
    the last ``cache`` frames are kept. ``height``/``width`` are the slices' own size (y, x), at which
    the predictor returns its masks. ``reads`` counts computed frames (tests check frames come from here).
    """

    def __init__(self, hu: np.ndarray, image_size: int, *, level: float = CT_WINDOW[0], width: float = CT_WINDOW[1],
                 cache: int = 4) -> None:
        if hu.ndim != 3:
            raise ValueError(f"expected (z, y, x) slices, got shape {hu.shape}")
        self.hu = hu
        self.image_size = int(image_size)
        self.level, self.width = float(level), float(width)
        self.height, self.width_px = int(hu.shape[1]), int(hu.shape[2])
        self._mean = torch.tensor(SAM2_IMG_MEAN, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(SAM2_IMG_STD, dtype=torch.float32)[:, None, None]
        self._cache: dict[int, torch.Tensor] = {}
        self._cache_size = max(1, cache)
        self.reads = 0

    def __len__(self) -> int:
        return int(self.hu.shape[0])

    def frame(self, index: int) -> torch.Tensor:
        """(3, S, S) normalised frame of slice ``index`` (same as ``self[index]``)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range 0..{len(self) - 1}")
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        grey = torch.from_numpy(window(self.hu[index], self.level, self.width))[None, None]
        grey = F.interpolate(grey, size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False, antialias=True)[0].clamp_(0.0, 1.0)
        out = (grey.expand(3, -1, -1) - self._mean) / self._std
        self.reads += 1
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[index] = out
        return out

    __getitem__ = frame
