"""One progress and cancel protocol (polycl.progress) under every long operation, and the
out-of-memory retry (polycl.device.retry_on_oom) that the pipeline functions use."""

from __future__ import annotations

import inspect
import io
import json

import numpy as np
import pytest

from polycl.errors import Cancelled, InputError
from polycl.progress import CancelToken, Reporter, json_lines, terminal


def test_reporter_forwards_checks_the_token_and_maps_stages():
    seen = []
    token = CancelToken()
    report = Reporter(lambda d, t, m: seen.append((d, t, m)), token, cancelled_message="stopped here")
    report(3, 10, "slice")
    assert seen == [(3, 10, "slice")]  # top level: units unchanged
    sam = report.span(0.1, 1.0)
    sam(1, 2, "half of SAM")
    assert seen[-1] == (pytest.approx(0.55), 1.0, "half of SAM")
    inner = sam.span(0.5, 1.0)  # a stage of a stage: 0.1 + 0.9 * (0.5 + 0.5 * 0)
    inner(0, 4, "start")
    assert seen[-1][0] == pytest.approx(0.55)
    token.cancel()
    with pytest.raises(Cancelled, match="stopped here"):
        report(4, 10, "never shown")
    assert len(seen) == 3
    with pytest.raises(TypeError, match="CancelToken"):
        Reporter(None, lambda: True)  # the old callable convention is refused, not silently ignored


def test_json_lines_and_terminal_bar(capsys):
    out = io.StringIO()
    json_lines(out)(2, 8, "case2: done")
    assert json.loads(out.getvalue()) == {"event": "progress", "done": 2, "total": 8, "message": "case2: done"}
    with terminal("segment", percent=True) as bar:
        bar(0.5, 1.0, "U-Net")
    err = capsys.readouterr().err
    assert "segment" in err and "50%" in err and "U-Net" in err


#: every long operation of polycl and the keyword arguments of the one protocol
LONG_OPERATIONS = [
    ("polycl.inference", "predict_probabilities"),
    ("polycl.segment", "run"), ("polycl.refine", "run"), ("polycl.propagate", "run"),
    ("polycl.finetune", "finetune"), ("polycl.pretrain.train", "pretrain"), ("polycl.batch", "run_batch"),
    ("polycl.download", "download"), ("polycl.sam.weights", "checkpoint_path"),
    ("polycl.propagate.sam2_weights", "ensure_sam2"),
]


@pytest.mark.parametrize("module,name", LONG_OPERATIONS)
def test_every_long_operation_takes_progress_and_cancel(module, name):
    import importlib

    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    for keyword in ("progress", "cancel"):
        assert keyword in params and params[keyword].kind is inspect.Parameter.KEYWORD_ONLY, (name, keyword)
        assert params[keyword].default is None, (name, keyword)
    assert not {"callback", "show_progress"} & set(params), name  # no second convention beside it


def test_segment_cancelled_in_the_unet_stage_returns_nothing(ts):
    """Real CT, bundled model: a Cancel pressed after the first U-Net batch stops the run."""
    from polycl.io import read_volume
    from polycl.segment import SegmentOptions
    from polycl import segment

    volume = read_volume(ts / "example_ct_sm.nii.gz")
    token = CancelToken()
    seen = []

    def press_cancel(done, total, message):
        seen.append((done, message))
        token.cancel()

    with pytest.raises(Cancelled, match="nothing was changed"):
        segment.run(volume, "polycl-liver", SegmentOptions(mode="unet", device="cpu", batch_size=8),
                    progress=press_cancel, cancel=token)
    assert len(seen) == 1 and seen[0][1] == "U-Net" and 0 < seen[0][0] < 1


def test_retry_on_oom_shrinks_the_batch_and_keeps_other_errors():
    from polycl.device import retry_on_oom

    tried = []

    def run(batch):
        tried.append(batch)
        if batch > 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch

    assert retry_on_oom(run, 16) == 4 and tried == [16, 4]
    with pytest.raises(RuntimeError, match="out of memory"):
        retry_on_oom(lambda b: (_ for _ in ()).throw(RuntimeError("CUDA out of memory")), 1)

    def broken(batch):
        tried.append(batch)
        raise RuntimeError("shape mismatch")

    tried.clear()
    with pytest.raises(RuntimeError, match="shape"):
        retry_on_oom(broken, 16)
    assert tried == [16]  # not an OOM: no retry


def test_typed_options_refuse_bad_settings_before_any_work(ts):
    from polycl.io import read_volume
    from polycl import refine
    from polycl.propagate import PropagateOptions

    volume = read_volume(ts / "example_ct_sm.nii.gz")
    seed = np.zeros(volume.shape, np.uint8)
    with pytest.raises(InputError, match="unknown engine"):  # propagation's options are checked when made
        PropagateOptions(engine="magic")
    with pytest.raises(InputError, match="stop_after"):
        PropagateOptions(stop_after=0)
    with pytest.raises(InputError, match="unknown SAM backend"):
        refine.run(volume, seed, refine.RefineOptions(sam_model="sam_vit_z"))
    with pytest.raises(InputError, match="margin"):
        refine.run(volume, seed, refine.RefineOptions(margin=-1))
