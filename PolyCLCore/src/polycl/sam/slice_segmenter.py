"""Interactive SAM on a CT volume, one axial slice at a time (the API the Slicer module and the
SAM 2 / chaining propagation engines build on).

Example::

    from polycl.sam import SliceSegmenter
    seg = SliceSegmenter(volume, backend="litemedsam", device="auto")   # Volume or (z, y, x) HU array
    seg.set_slice(42)                                  # image embedding computed once, LRU-cached
    mask, quality = seg.predict(box=(120, 80, 260, 210))               # (y, x) uint8 0/1, SAM's IoU estimate
    mask, quality = seg.predict(points=[(190, 150), (30, 30)], labels=[1, 0])
    masks, qualities = seg.predict_boxes([(..), (..)])                 # several boxes on the slice at once

Coordinates
    Slices are ``array[k]`` of the segmenter's array, ``seg.array`` ((z, y, x)). Given a
    :class:`~polycl.volume.Volume` with ``canonical=True`` (the default) that array is the volume
    reoriented to LPS index order (:func:`polycl.preprocess.to_canonical`: axial slices, anterior at
    the top, patient right on the left, as SAM's medical training data was shown); use
    :meth:`SliceSegmenter.mask_to_volume` to bring a (z, y, x) result back onto the volume's grid.
    Given a plain numpy array, it is used as is. Boxes are ``(x0, y0, x1, y1)`` and points ``(x, y)`` in
    pixel index units of the slice: x = column (axis 2), y = row (axis 1), inclusive.

CT window
    SAM sees the slice windowed at level 40 / width 400 HU (-160..240 HU) scaled to 0..255 and
    repeated on 3 channels: the soft-tissue window that MedSAM's and LiteMedSAM's CT training data
    were prepared with (abdominal organs, liver, kidneys, lesions), and the paper's window too.
    Pass ``window=(level, width)`` for another one, or ``window=None`` when the array already holds
    0..255 display values (e.g. DeepLesion's pre-windowed slices).

Speed
    The image embedding is the expensive part (LiteMedSAM on 2 CPU cores: ~0.6 s with the OpenVINO
    encoder that is the CPU default, ~2 s in eager torch; a box: ~60 ms; see
    :mod:`polycl.sam.encoder_engines`).
    Embeddings live in a per-segmenter LRU cache (``cache_size`` slices; 4 MB each), so moving back
    and forth between slices is instant. :meth:`precompute` embeds many slices in batches (on a GPU
    with bf16 autocast of the image encoder when ``amp`` allows; the mask decoder stays fp32).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from polycl.errors import InputError
from polycl.preprocess import CT_WINDOW
from polycl.volume import Volume

#: Window fed to SAM (level, width) in HU: the soft-tissue window of MedSAM's CT preprocessing.
SAM_WINDOW = CT_WINDOW


@dataclass
class _Embedding:
    features: torch.Tensor  # (1, 256, 64, 64) on the model's device
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def window_to_uint8(hu: np.ndarray, window: tuple[float, float] | None = SAM_WINDOW) -> np.ndarray:
    """HU -> uint8 0..255 through ``window`` = (level, width); ``None``: values already 0..255."""
    if window is None:
        return np.clip(hu, 0, 255).astype(np.uint8)
    level, width = window
    lo = level - width / 2.0
    out = (hu.astype(np.float32) - lo) * (255.0 / width)
    return np.clip(out, 0, 255).astype(np.uint8)


class SliceSegmenter:
    """SAM prompts (boxes, points) on the axial slices of one volume. See the module docstring.

    Args:
        image: a :class:`Volume` (CT in HU) or a (z, y, x) numpy array (HU, or 0..255 with window=None).
        backend: a name from :data:`polycl.sam.weights.SAM_CHECKPOINTS` ('litemedsam' is bundled).
        device: 'auto', 'cpu' or 'cuda'.
        window: (level, width) HU window, or None for pre-windowed 0..255 arrays.
        cache_size: how many slice embeddings to keep (LRU).
        checkpoint: path to a user-downloaded checkpoint file for ``backend``.
        download: allow downloading a registered checkpoint on first use.
        amp: 'auto' (bf16 autocast of the image encoder on CUDA when supported), True or False.
        canonical: reorient a Volume to LPS index order first (ignored for arrays).
        model: an already loaded :class:`~polycl.sam.predictor.LoadedSam` to share between volumes.
    """

    def __init__(self, image: Volume | np.ndarray, *, backend: str = "litemedsam", device: str = "auto",
                 window: tuple[float, float] | None = SAM_WINDOW, cache_size: int = 16, checkpoint=None,
                 download: bool = False, amp: bool | str = "auto", canonical: bool = True, model=None) -> None:
        from polycl.sam.predictor import load_sam

        self.volume = image if isinstance(image, Volume) else None
        if isinstance(image, Volume):
            from polycl.preprocess import to_canonical

            array = to_canonical(image) if canonical else image.array
        else:
            array = np.asarray(image)
        if array.ndim != 3:
            raise InputError(f"SliceSegmenter needs a 3D (z, y, x) array, got shape {array.shape}")
        self.canonical = bool(canonical and self.volume is not None)
        self.array = array
        self.window = window
        self.loaded = model if model is not None else load_sam(backend, device=device, checkpoint=checkpoint,
                                                               download=download)
        self.backend = self.loaded.name
        self.device = self.loaded.device
        self.predictor = self.loaded.predictor()
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[int, _Embedding] = OrderedDict()
        self._lock = threading.RLock()
        if amp == "auto":
            amp = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.amp = bool(amp) and self.device.type == "cuda"
        self.slice_index: int | None = None
        #: image embeddings computed so far (a slice embedded twice, after leaving the cache, counts twice).
        self.embeddings_computed = 0
        #: low-resolution logits (1, 256, 256) of the last prediction, usable as ``mask_input``.
        self.last_low_res_logits: np.ndarray | None = None

    # -- slices and embeddings -------------------------------------------------------------------
    @property
    def num_slices(self) -> int:
        return int(self.array.shape[0])

    @property
    def slice_shape(self) -> tuple[int, int]:
        return (int(self.array.shape[1]), int(self.array.shape[2]))

    def slice_rgb(self, k: int) -> np.ndarray:
        """Slice ``k`` as SAM's input: (y, x, 3) uint8 RGB."""
        self._check_slice(k)
        gray = window_to_uint8(self.array[k], self.window)
        return np.repeat(gray[:, :, None], 3, axis=2)

    def _check_slice(self, k: int) -> None:
        if not 0 <= int(k) < self.num_slices:
            raise InputError(f"slice {k} is outside the volume (0..{self.num_slices - 1})")

    def _transform(self, k: int) -> torch.Tensor:
        rgb = self.slice_rgb(k)
        resized = self.predictor.transform.apply_image(rgb)
        t = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        return t

    @torch.inference_mode()
    def _encode(self, batch: list[torch.Tensor]) -> torch.Tensor:
        model = self.loaded.model
        x = torch.cat([model.preprocess(t.float()) for t in batch], 0)
        encoder = self.loaded.encoder  # eager torch or a CPU inference engine (polycl.sam.encoder_engines)
        if self.amp and encoder.name == "torch":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                feats = encoder(x)
            return feats.float()
        return encoder(x)

    def precompute(self, slices: Sequence[int], batch_size: int | None = None) -> None:
        """Embed ``slices`` (those not cached yet) in batches; batch_size defaults to 8 on GPU, 1 on CPU.
        Only the last ``cache_size`` stay cached."""
        if batch_size is None:
            batch_size = 8 if self.device.type == "cuda" else 1
        with self._lock:
            todo = [int(k) for k in slices if int(k) not in self._cache]
            for start in range(0, len(todo), batch_size):
                ks = todo[start:start + batch_size]
                tensors = [self._transform(k) for k in ks]
                feats = self._encode(tensors)
                self.embeddings_computed += len(ks)
                for i, (k, t) in enumerate(zip(ks, tensors)):
                    self._store(k, _Embedding(feats[i:i + 1], self.slice_shape, tuple(t.shape[-2:])))

    def _store(self, k: int, emb: _Embedding) -> None:
        self._cache[k] = emb
        self._cache.move_to_end(k)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def is_cached(self, k: int) -> bool:
        return int(k) in self._cache

    def set_slice(self, k: int) -> None:
        """Make slice ``k`` the current one (embedding from the cache, or computed now)."""
        k = int(k)
        self._check_slice(k)
        with self._lock:
            if k in self._cache:
                self._cache.move_to_end(k)
            else:
                self.precompute([k], batch_size=1)
            emb = self._cache[k]
            p = self.predictor
            p.features, p.original_size, p.input_size, p.is_image_set = (emb.features, emb.original_size,
                                                                        emb.input_size, True)
            self.slice_index = k

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self.predictor.reset_image()
            self.slice_index = None

    # -- prediction -------------------------------------------------------------------------------
    def _require_slice(self) -> None:
        if self.slice_index is None:
            raise InputError("no slice set: call set_slice(k) before predict()")

    def check_box(self, box) -> np.ndarray:
        """Validate a (x0, y0, x1, y1) box in pixel indices and clip it to the slice (:func:`polycl.masks.check_box`)."""
        from polycl.masks import check_box

        return check_box(box, self.slice_shape)

    @torch.inference_mode()
    def predict(self, box=None, points=None, labels=None, *, mask_input: np.ndarray | None = None,
                multimask: bool | None = None) -> tuple[np.ndarray, float]:
        """Segment on the current slice from a box, points (labels 1 = inside, 0 = outside) or both.

        Returns ``(mask, quality)``: a (y, x) uint8 0/1 mask of the slice and SAM's predicted IoU
        (0..1; higher is better). With ``multimask`` (default: only for point prompts without a box)
        SAM proposes three masks and the one with the best predicted IoU is returned.
        ``mask_input``: (1, 256, 256) low-res logits from a previous prediction (``last_low_res_logits``).
        """
        self._require_slice()
        if box is None and points is None:
            raise InputError("give a box, points, or both")
        coords = lab = None
        if points is not None:
            coords = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            lab = np.ones(len(coords), np.int32) if labels is None else np.asarray(labels, np.int32).reshape(-1)
            if len(lab) != len(coords):
                raise InputError(f"{len(coords)} points but {len(lab)} labels")
            if not set(np.unique(lab).tolist()) <= {0, 1}:
                raise InputError("point labels must be 1 (inside) or 0 (outside)")
        b = self.check_box(box) if box is not None else None
        if multimask is None:
            multimask = b is None and coords is not None and len(coords) == 1
        with self._lock:
            masks, scores, low = self.predictor.predict(point_coords=coords, point_labels=lab, box=b,
                                                        mask_input=mask_input, multimask_output=multimask)
        best = int(np.argmax(scores))
        self.last_low_res_logits = low[best:best + 1]
        return masks[best].astype(np.uint8), float(scores[best])

    @torch.inference_mode()
    def predict_boxes(self, boxes: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """Several boxes on the current slice in one decoder pass.

        Returns (masks (n, y, x) uint8, qualities (n,) float)."""
        self._require_slice()
        b = np.stack([self.check_box(x) for x in boxes]) if len(boxes) else np.zeros((0, 4), np.float32)
        h, w = self.slice_shape
        if len(b) == 0:
            return np.zeros((0, h, w), np.uint8), np.zeros((0,), np.float32)
        p = self.predictor
        with self._lock:
            bt = p.transform.apply_boxes_torch(torch.as_tensor(b, device=self.device), p.original_size)
            masks, scores, _ = p.predict_torch(None, None, boxes=bt, multimask_output=False)
        return masks[:, 0].to(torch.uint8).cpu().numpy(), scores[:, 0].float().cpu().numpy()

    # -- orientation helpers ----------------------------------------------------------------------
    def mask_to_volume(self, mask: np.ndarray) -> np.ndarray:
        """A (z, y, x) mask on this segmenter's array -> the original volume's grid."""
        if mask.shape != self.array.shape:
            raise InputError(f"mask shape {mask.shape} is not the segmenter's {self.array.shape}")
        if not self.canonical:
            return mask
        from polycl.preprocess import from_canonical

        return from_canonical(mask, self.volume)

    def mask_from_volume(self, mask: np.ndarray) -> np.ndarray:
        """A (z, y, x) mask on the original volume's grid -> this segmenter's array order."""
        if not self.canonical:
            return mask
        from polycl.preprocess import to_canonical

        return to_canonical(self.volume.with_array(np.asarray(mask)))


class SegmenterCache:
    """One :class:`SliceSegmenter` per volume, kept between operations, so that Segment, Refine,
    Propagate and prompts on the same CT share its slice embeddings: no slice is embedded twice.

    Volumes are recognised by content (:meth:`polycl.volume.Volume.fingerprint`), not by object
    identity: a front end that re-reads its volume for every operation still hits the cache. The
    ``max_volumes`` most recently used volumes are kept (default 1: the CT being worked on); each
    keeps up to ``slices`` embeddings (LiteMedSAM: 4 MB each, so 256 slices are 1 GB).
    """

    def __init__(self, max_volumes: int = 1, slices: int = 256) -> None:
        self.max_volumes = max(1, int(max_volumes))
        self.slices = int(slices)
        self._items: OrderedDict[tuple, SliceSegmenter] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, volume: Volume, *, backend: str = "litemedsam", device: str = "auto",
            window: tuple[float, float] | None = SAM_WINDOW) -> SliceSegmenter:
        """The segmenter for ``volume`` (canonical orientation), made on first use."""
        from polycl.device import resolve_device

        key = (volume.fingerprint(), backend, str(resolve_device(device)), window)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            seg = SliceSegmenter(volume, backend=backend, device=device, window=window,
                                 cache_size=min(volume.shape[0], self.slices))
            self._items[key] = seg
            while len(self._items) > self.max_volumes:
                self._items.popitem(last=False)
            return seg

    def clear(self) -> None:
        """Forget every volume's embeddings (frees their memory)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
