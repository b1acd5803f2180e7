"""SAM 2 engine: ``sam2``'s video predictor with CT slices as frames, fed from memory.

The inference state is built here with exactly the structure of ``SAM2VideoPredictor.init_state``
(sam2 1.1.0) but with ``images`` = a :class:`~polycl.propagate.frames.CTFrames` sequence instead of
frames loaded from a JPEG folder. Seeds become conditioning frames (``add_new_mask`` /
``add_new_points_or_box``); ``propagate_in_video`` then runs forward from the first seed and in
reverse from it, and each direction ends at the limits or by the stop rule once it has passed the
outermost seed. On CUDA the model runs under bf16 autocast (as the SAM 2 authors do).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Iterator

import numpy as np
import torch

from polycl.propagate.frames import CTFrames
from polycl.propagate.seeds import Seed
from polycl.propagate.stop import StopRule

OBJ_ID = 1


def init_state_from_frames(predictor, frames: CTFrames, *, offload_state_to_cpu: bool = False) -> dict:
    """``SAM2VideoPredictor.init_state`` without the file loading: the frames come from memory.

    Keys and meaning follow sam2 1.1.0's ``init_state``; frames stay on the CPU (what sam2 calls
    ``offload_video_to_cpu``) and are moved to the model's device one at a time.
    """
    device = predictor.device
    state: dict = {
        "images": frames,
        "num_frames": len(frames),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": frames.height,
        "video_width": frames.width_px,
        "device": device,
        "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    return state


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Sam2Engine:
    """Propagation with a ``SAM2VideoPredictor`` (real or random weights; see ``checkpoints.build_predictor``)."""

    name = "sam2"

    def __init__(self, predictor, *, label: str = "", offload_state_to_cpu: bool = False) -> None:
        self.predictor = predictor
        self.label = label or "SAM 2"
        self.offload_state_to_cpu = offload_state_to_cpu
        self.last_state: dict | None = None  # kept for inspection by tests

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    def _confidence(self, state: dict, frame_idx: int, logits: torch.Tensor) -> float:
        """Object-presence probability (sigmoid of SAM 2's object score) x mean foreground probability."""
        out_dict = state["output_dict_per_obj"][0]
        out = out_dict["cond_frame_outputs"].get(frame_idx) or out_dict["non_cond_frame_outputs"].get(frame_idx)
        p_obj = 1.0
        if out is not None and out.get("object_score_logits") is not None:
            p_obj = float(torch.sigmoid(out["object_score_logits"].float()).reshape(-1)[0])
        prob = torch.sigmoid(logits.float())
        fg = prob[logits > 0]
        return p_obj * (float(fg.mean()) if fg.numel() else 0.0)

    def run(self, hu: np.ndarray, seeds: list[Seed], *, start: int, end: int, rule: StopRule,
            pixel_area_mm2: float = 1.0, slice_mm: float | None = None) -> Iterator[tuple[int, np.ndarray, float]]:
        """Yield (canonical slice index, bool mask (y, x), confidence) for slices start..end (inclusive).
        ``slice_mm`` is not used: SAM 2 carries its memory through every frame."""
        p = self.predictor
        frames = CTFrames(hu[start:end + 1], p.image_size)
        state = init_state_from_frames(p, frames, offload_state_to_cpu=self.offload_state_to_cpu)
        self.last_state = state
        local = sorted(s.index - start for s in seeds)
        lo, hi = local[0], local[-1]
        by_local = {s.index - start: s for s in seeds}
        with torch.inference_mode(), _autocast(self.device):
            for li in local:
                s = by_local[li]
                if s.mask is not None:
                    p.add_new_mask(state, li, OBJ_ID, torch.from_numpy(s.mask))
                else:
                    p.add_new_points_or_box(state, li, OBJ_ID, points=s.points, labels=s.labels, box=s.box)
        seen: set[int] = set()
        for reverse, edge in ((False, hi), (True, lo)):
            tracker = rule.tracker(by_local[edge].mask if by_local[edge].mask is not None
                                   else np.zeros(hu.shape[1:], bool), hu[edge + start], pixel_area_mm2)
            gen = p.propagate_in_video(state, start_frame_idx=lo, reverse=reverse)
            try:
                while True:
                    with torch.inference_mode(), _autocast(self.device):
                        try:
                            fidx, _, masks = next(gen)
                        except StopIteration:
                            break
                        logits = masks[0, 0]
                        mask = (logits > 0).cpu().numpy()
                        conf = self._confidence(state, fidx, logits)
                    if fidx in seen:
                        continue
                    seen.add(fidx)
                    stop = False
                    beyond = fidx > hi if not reverse else fidx < lo
                    if beyond:
                        mask, stop = tracker.check(mask, hu[fidx + start], conf)
                    yield fidx + start, mask, conf
                    if stop:
                        break
            finally:
                gen.close()
