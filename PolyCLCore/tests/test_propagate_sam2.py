"""SAM 2 engine mechanics with the REAL SAM 2.1 hiera-tiny architecture and RANDOM weights.

Random weights make the masks meaningless, so these tests check mechanics only: frames come from
memory, both directions are visited from a middle seed, limits and the stop rule hold, two seed
slices both condition the run, cancelling keeps nothing, and the result lies on the input grid.
Slice by slice they look at the internal stream (:func:`polycl.propagate.stream.prepare`) under
:func:`polycl.propagate.run`.
To stay fast on 2 CPU cores the model runs at image_size 128 (the official checkpoints use 1024)
on a 7-slice crop of the real example CT.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import dice
from polycl.errors import Cancelled, InputError
from polycl.propagate import PropagateOptions, Seed, canonical_slice_index, run
from polycl.propagate.stream import prepare
from polycl.propagate.frames import SAM2_IMG_MEAN, SAM2_IMG_STD, CTFrames
from polycl.volume import Volume
from polycl.progress import CancelToken

Z0, Z1 = 87, 94  # input slices of example_ct kept (the liver spans 69..111)


@pytest.fixture(scope="module")
def predictor():
    from polycl.propagate.sam2_weights import build_predictor

    torch.manual_seed(0)
    return build_predictor(random_weights=True, device="cpu", image_size=128)


@pytest.fixture(scope="module")
def crop(example_ct, example_liver):
    """7 axial slices of the real CT (RAS file: canonical order flips x and y) and its liver."""
    image = Volume.from_sitk(example_ct.to_sitk()[:, :, Z0:Z1], "example_ct crop")
    liver = Volume.from_sitk(example_liver.to_sitk()[:, :, Z0:Z1])
    assert image.geometry.orientation_code() != "LPS"
    return image, liver.array.astype(np.uint8)


def _stream(image, seed, predictor, seed_slices=None, **options):
    return prepare(image, seed, PropagateOptions(**options), seed_slices=seed_slices, predictor=predictor)


def _single_slice_seed(liver: np.ndarray, k: int) -> np.ndarray:
    seed = np.zeros_like(liver)
    seed[k] = liver[k]
    return seed


def test_frames_are_windowed_ct_from_memory(crop, predictor, tmp_path, monkeypatch):
    import sam2.sam2_video_predictor as svp
    import sam2.utils.misc as misc

    def no_files(*a, **k):
        raise AssertionError("SAM 2's file-based frame loader must not be used")

    monkeypatch.setattr(misc, "load_video_frames", no_files)
    monkeypatch.setattr(svp, "load_video_frames", no_files)
    monkeypatch.chdir(tmp_path)
    image, liver = crop
    hu = np.random.default_rng(0).uniform(-1000, 1000, (3, 40, 50)).astype(np.float32)
    frames = CTFrames(hu, 64)
    f = frames[1]
    assert f.shape == (3, 64, 64) and len(frames) == 3 and (frames.height, frames.width_px) == (40, 50)
    grey = f * torch.tensor(SAM2_IMG_STD)[:, None, None] + torch.tensor(SAM2_IMG_MEAN)[:, None, None]
    assert torch.allclose(grey[0], grey[1], atol=1e-5) and torch.allclose(grey[0], grey[2], atol=1e-5)
    assert 0 <= float(grey.min()) and float(grey.max()) <= 1 + 1e-5

    stream = _stream(image, _single_slice_seed(liver, 3), predictor, stop_after=None, start=2, end=4)
    items = list(stream)
    state = stream.runner.last_state
    assert isinstance(state["images"], CTFrames) and state["images"].reads >= 3
    assert (state["video_height"], state["video_width"]) == image.shape[1:]
    assert all(it.mask.shape == image.shape[1:] for it in items)
    assert list(tmp_path.iterdir()) == []  # nothing written (no JPEG folder)


def test_middle_seed_visits_both_directions_within_limits(crop, predictor):
    image, liver = crop
    stream = _stream(image, _single_slice_seed(liver, 3), predictor, stop_after=None, start=1, end=5)
    assert stream.engine.name == "sam2"
    seed = canonical_slice_index(image, 3)
    lo, hi = sorted((canonical_slice_index(image, 1), canonical_slice_index(image, 5)))
    items = list(stream)
    idx = [it.index for it in items]
    assert idx[0] == seed
    assert sorted(idx) == list(range(lo, hi + 1))  # every slice in the limits, each once, nothing outside
    assert any(k < seed for k in idx) and any(k > seed for k in idx)
    assert all(0.0 <= it.confidence <= 1.0 for it in items)
    assert dice(items[0].mask, liver[3][::-1, ::-1]) > 0.9  # seed slice reproduced (canonical = flipped x, y)


def test_stop_rule_ends_each_direction_after_k_vanished_slices(crop, predictor):
    image, liver = crop
    head = predictor.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    saved = (last.weight.detach().clone(), last.bias.detach().clone())
    with torch.no_grad():  # the model now says "no object" on every propagated frame
        last.weight.zero_()
        last.bias.fill_(-20.0)
    try:
        stream = _stream(image, _single_slice_seed(liver, 3), predictor, stop_after=2)
        items = list(stream)  # 7 slices, seed in the middle: without the stop rule all 3 on each side
    finally:
        with torch.no_grad():
            last.weight.copy_(saved[0])
            last.bias.copy_(saved[1])
    seed = canonical_slice_index(image, 3)
    assert sorted(it.index for it in items) == [seed - 2, seed - 1, seed, seed + 1, seed + 2]
    assert all(not it.mask.any() for it in items if it.index != seed)


def test_two_seed_slices_both_condition_the_run(crop, predictor):
    image, liver = crop
    seed = np.zeros_like(liver)
    seed[1], seed[5] = liver[1], liver[5]
    stream = _stream(image, seed, predictor, stop_after=None)
    assert sorted(s.index for s in stream.seeds) == sorted(canonical_slice_index(image, k) for k in (1, 5))
    items = {it.index: it for it in stream}
    assert sorted(items) == list(range(image.shape[0]))
    cond = stream.runner.last_state["output_dict_per_obj"][0]["cond_frame_outputs"]
    assert sorted(cond) == sorted(s.index for s in stream.seeds)  # both are SAM 2 conditioning frames
    for k in (1, 5):
        assert dice(items[canonical_slice_index(image, k)].mask, liver[k][::-1, ::-1]) > 0.9


def test_box_and_point_seeds(crop, predictor):
    image, _ = crop
    stream = _stream(image, [Seed(3, box=(30, 30, 70, 70)), Seed(4, points=[(50, 50)], labels=[1])], predictor,
                     stop_after=None, start=2, end=5)
    items = list(stream)
    assert sorted(it.index for it in items) == [2, 3, 4, 5]
    assert all(it.mask.shape == image.shape[1:] for it in items)
    # the box and the point were given to SAM 2 as prompts: each seed slice is a conditioning frame
    # (a seed dropped or turned into a propagated frame would not be). SAM 2's frames are the slices
    # start..end, so slice k is frame k - start.
    state = stream.runner.last_state
    cond = state["output_dict_per_obj"][0]["cond_frame_outputs"]
    assert sorted(cond) == [3 - 2, 4 - 2]
    prompts = state["point_inputs_per_obj"][0]
    assert sorted(prompts) == [1, 2]
    # a box is two points with labels 2 and 3 (its corners); a click is one point with label 1
    assert prompts[1]["point_labels"].flatten().tolist() == [2, 3]
    assert prompts[2]["point_labels"].flatten().tolist() == [1]


def test_cancel_keeps_nothing_and_result_is_on_input_grid(crop, predictor):
    image, liver = crop
    seed = _single_slice_seed(liver, 3)
    def cancel_after_two(token):  # the Cancel button, pressed once two slices are done
        return lambda done, total, message: token.cancel() if done >= 2 else None

    token = CancelToken()
    with pytest.raises(Cancelled):
        run(image, seed, PropagateOptions(stop_after=None), predictor=predictor, progress=cancel_after_two(token),
            cancel=token)

    res = run(image, seed, PropagateOptions(stop_after=None, start=2, end=4), predictor=predictor)
    assert res.engine.name == "sam2"
    assert res.mask.shape == image.shape and res.mask.dtype == np.uint8
    assert dice(res.mask[3], liver[3]) > 0.9  # the seed comes back at its own input index, unflipped
    assert not res.mask[:2].any() and not res.mask[5:].any()  # nothing outside the limits


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_out_of_memory_reruns_with_sam2_state_on_the_cpu(crop, predictor, monkeypatch):
    """A GPU out of memory cannot be caused on the CPU: the SAM 2 engine here raises torch's OOM
    error on its first run as a GPU would, and claims CUDA; run() reruns it with sam2's
    ``offload_state_to_cpu`` and returns the same mask as a run that never ran out of memory."""
    from polycl.propagate.sam2_engine import Sam2Engine

    image, liver = crop
    seed = _single_slice_seed(liver, 3)
    options = PropagateOptions(stop_after=None, start=2, end=4)
    plain = run(image, seed, options, predictor=predictor).mask
    tries = []
    real_run = Sam2Engine.run

    def run_once_out_of_memory(self, *args, **kwargs):
        tries.append(self.offload_state_to_cpu)
        if not self.offload_state_to_cpu:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        yield from real_run(self, *args, **kwargs)

    monkeypatch.setattr(Sam2Engine, "run", run_once_out_of_memory)
    monkeypatch.setattr(Sam2Engine, "device", property(lambda self: torch.device("cuda")))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    retried = run(image, seed, options, predictor=predictor).mask
    assert tries == [False, True] and np.array_equal(retried, plain)


def test_bad_inputs_raise_before_any_work(crop, predictor, ts):
    image, liver = crop
    with pytest.raises(InputError, match="empty"):
        run(image, np.zeros_like(liver), predictor=predictor)
    with pytest.raises(InputError, match="shape"):
        run(image, liver[:, :-1], predictor=predictor)
    with pytest.raises(InputError, match="outside the limits"):
        run(image, _single_slice_seed(liver, 3), PropagateOptions(start=4, end=6), predictor=predictor)
    with pytest.raises(InputError, match="not annotated"):
        run(image, _single_slice_seed(liver, 3), seed_slices=[2], predictor=predictor)


def test_compile_option_builds_sam2s_vos_optimized_predictor(monkeypatch):
    """The GPU option: sam2's torch.compile'd predictor (SAM2VideoPredictorVOS). Built here with
    random weights; its first frame would compile for minutes, so it is not run on the CPU."""
    from polycl.propagate.sam2_weights import build_predictor

    monkeypatch.setenv("POLYCL_SAM2_COMPILE", "1")
    p = build_predictor(random_weights=True, image_size=128, device="cpu")
    assert type(p).__name__ == "SAM2VideoPredictorVOS"
    # sam2 wraps the image encoder's and memory encoder's forward in torch.compile
    assert hasattr(p.image_encoder.forward, "_torchdynamo_orig_callable")
    assert hasattr(p.memory_encoder.forward, "_torchdynamo_orig_callable")
    assert type(build_predictor(random_weights=True, image_size=128, device="cpu", compile=False)).__name__ \
        == "SAM2VideoPredictor"
