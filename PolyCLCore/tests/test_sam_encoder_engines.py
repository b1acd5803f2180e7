"""CPU inference engines for the SAM image encoder (polycl.sam.encoder_engines) against eager torch.

Real model (bundled LiteMedSAM), real CT (example_ct_dicom, its liver label resampled in physical
space). The bar: the fast engine keeps masks identical in practice, per-slice mask
Dice >= 0.995 against eager torch, and the same 3D Dice on refinement and propagation. Measured on
the 2-core machine: embeddings differ from eager by a relative L2 of ~3e-6 (OpenVINO fp32, ONNX
Runtime), masks by 0 pixels on these slices.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import dice

SLICES = (4, 9, 14)
FAST = ("openvino", "onnxruntime")


@pytest.fixture(scope="module")
def engines_cache(tmp_path_factory):
    """One artefact folder for this module: exports are made once here, then reused."""
    return tmp_path_factory.mktemp("encoders")


def loaded(engine: str, cache):
    """A LoadedSam whose encoder is ``engine``, built against the module's artefact folder."""
    from polycl.sam import load_sam
    from polycl.sam.encoder_engines import build_encoder

    sam = load_sam("litemedsam", device="cpu", download=False, encoder=engine)
    if sam._encoder is None:
        sam._encoder = build_encoder(sam.model.image_encoder, model_name=sam.name, sha256=sam.sha256,
                                     device=sam.device, engine=engine, cache=cache)
    return sam


def slice_results(volume, label, sam) -> dict[int, tuple]:
    """Per slice: (embedding, mask from the label's box, SAM quality)."""
    from polycl.sam import SliceSegmenter

    seg = SliceSegmenter(volume, model=sam, cache_size=8)
    lab = seg.mask_from_volume(label)
    out = {}
    for k in SLICES:
        seg.set_slice(k)
        ys, xs = np.nonzero(lab[k])
        mask, q = seg.predict(box=(xs.min() - 3, ys.min() - 3, xs.max() + 3, ys.max() + 3))
        out[k] = (seg._cache[k].features.clone(), mask, q)
    return out


@pytest.fixture(scope="module")
def eager_results(dicom_ct, dicom_liver, engines_cache):
    return slice_results(dicom_ct, dicom_liver.array, loaded("torch", engines_cache))


@pytest.mark.parametrize("engine", FAST)
def test_fast_engine_gives_eager_masks(dicom_ct, dicom_liver, engines_cache, eager_results, engine):
    from polycl.sam.encoder_engines import relative_error

    sam = loaded(engine, engines_cache)
    assert sam.encoder.name == engine, sam.encoder.describe()  # built, checked, not fallen back
    assert sam.encoder.relative_error < 1e-4
    for k, (feat, mask, q) in slice_results(dicom_ct, dicom_liver.array, sam).items():
        ref_feat, ref_mask, ref_q = eager_results[k]
        assert relative_error(feat, ref_feat) < 1e-4, k
        assert ref_mask.sum() > 1000  # a real liver cross-section, not an empty comparison
        assert dice(mask, ref_mask) >= 0.995, k
        assert abs(q - ref_q) < 1e-3


def test_export_is_cached_by_weights_hash_and_version(engines_cache):
    """The second build reuses the files the first wrote (names: model, SHA-256 prefix, maker version)."""
    import openvino as ov

    from polycl.sam.encoder_engines import build_encoder

    sam = loaded("openvino", engines_cache)
    xml = engines_cache / f"litemedsam-{sam.sha256[:16]}-openvino{ov.get_version().split('-')[0]}.xml"
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    stamp = xml.stat().st_mtime_ns
    again = build_encoder(sam.model.image_encoder, model_name=sam.name, sha256=sam.sha256, device=sam.device,
                          engine="openvino", cache=engines_cache)
    assert again.name == "openvino" and xml.stat().st_mtime_ns == stamp
    assert not [p for p in engines_cache.iterdir() if p.name.startswith(".export-")]  # no leftovers


def test_corrupt_artefact_falls_back_to_eager(engines_cache, tmp_path):
    """A damaged export (say, a disk that filled up) is not used: eager torch runs and says why."""
    import shutil

    import torch

    from polycl.sam.encoder_engines import build_encoder

    sam = loaded("openvino", engines_cache)
    for p in engines_cache.glob("*openvino*"):
        shutil.copy(p, tmp_path / p.name)
    xml = next(tmp_path.glob("*.xml"))
    xml.write_text(xml.read_text()[:5000])  # truncated IR
    eng = build_encoder(sam.model.image_encoder, model_name=sam.name, sha256=sam.sha256, device=sam.device,
                        engine="openvino", cache=tmp_path)
    assert eng.name == "torch" and "openvino" in eng.fallback_reason
    x = torch.rand(1, 3, 256, 256)
    assert eng(x).shape == (1, 256, 64, 64)


def test_engine_that_changes_the_embedding_is_refused(engines_cache, monkeypatch):
    """The build-time check is what keeps masks equal: with a bar stricter than the engine's
    3e-6 error, OpenVINO is refused (this is how a bf16 default would be caught)."""
    from polycl.sam import encoder_engines

    sam = loaded("torch", engines_cache)
    monkeypatch.setattr(encoder_engines, "MAX_RELATIVE_ERROR", 1e-9)
    eng = encoder_engines.build_encoder(sam.model.image_encoder, model_name=sam.name, sha256=sam.sha256,
                                        device=sam.device, engine="auto", cache=engines_cache)
    assert eng.name == "torch"
    assert "openvino: embedding differs from eager torch" in eng.fallback_reason
    assert "onnxruntime: embedding differs" in eng.fallback_reason


def test_refinement_dice_equal_with_eager_and_fast_engine(dicom_ct, dicom_liver, engines_cache):
    """3D: the safe refiner on label-derived boxes gives the same masks with OpenVINO as with eager."""
    from polycl.sam import SliceSegmenter
    from polycl import refine

    label = np.zeros_like(dicom_liver.array)
    label[list(SLICES)] = dicom_liver.array[list(SLICES)]
    masks = {}
    for engine in ("torch", "openvino"):
        seg = SliceSegmenter(dicom_ct, model=loaded(engine, engines_cache), cache_size=8)
        masks[engine] = refine.run(dicom_ct, label, segmenter=seg).mask
    assert dice(masks["torch"], label) >= 0.9
    assert dice(masks["openvino"], masks["torch"]) >= 0.995
    assert abs(dice(masks["openvino"], label) - dice(masks["torch"], label)) < 1e-3


def test_chain_propagation_dice_equal_with_eager_and_fast_engine(dicom_ct, dicom_liver, engines_cache):
    """3D: chain propagation over 9 slices from one seed slice, eager against OpenVINO."""
    from polycl import propagate
    from polycl.sam import SliceSegmenter

    liver = dicom_liver.array
    masks = {}
    for engine in ("torch", "openvino"):
        seg = SliceSegmenter(dicom_ct, model=loaded(engine, engines_cache), cache_size=16)
        res = propagate.run(dicom_ct, liver, propagate.PropagateOptions(engine="chain", device="cpu", start=6, end=14),
                            seed_slices=[10], segmenter=seg)
        masks[engine] = res.mask
    window = np.zeros_like(liver)
    window[6:15] = liver[6:15]
    assert dice(masks["torch"], window) >= 0.9
    assert dice(masks["openvino"], masks["torch"]) >= 0.995
    assert abs(dice(masks["openvino"], window) - dice(masks["torch"], window)) < 2e-3


def test_missing_engine_package_falls_back_and_refines(tmp_path):
    """Forced fallback in a fresh interpreter: openvino and onnxruntime cannot be imported, so
    'auto' runs eager torch, says why, and refinement still reaches its Dice."""
    code = """
import sys
sys.modules['openvino'] = None; sys.modules['onnxruntime'] = None   # import fails as if not installed
import numpy as np
import torch
torch.set_num_threads(1)
from polycl.io import label_on_image_grid, read_label, read_volume, select_labels
from polycl.datasets import data_dir
from polycl.sam import SliceSegmenter, load_sam
from polycl import refine
ts = data_dir(required=True) / 'totalsegmentator'
vol = read_volume(ts / 'example_ct_dicom')
liver = select_labels(label_on_image_grid(read_label(ts / 'example_seg_dicom.nii.gz'), vol).array, 5)
label = np.zeros_like(liver); label[[4, 14]] = liver[[4, 14]]
sam = load_sam('litemedsam', device='cpu', download=False)
mask = refine.run(vol, label, segmenter=SliceSegmenter(vol, model=sam)).mask
d = 2 * (mask & label).sum() / (mask.sum() + label.sum())
import json
print(json.dumps({'engine': sam.encoder.name, 'dice': float(d), 'reason': sam.encoder.fallback_reason}))
"""
    env = dict(os.environ, POLYCL_CACHE=str(tmp_path))
    env.pop("POLYCL_SAM_ENCODER", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["engine"] == "torch"
    assert got["dice"] >= 0.9
    assert "openvino: not installed" in got["reason"] and "onnxruntime: not installed" in got["reason"]


def test_engines_are_not_imported_or_built_at_import_or_load_time():
    code = ("import sys, polycl.sam, polycl.segment.pipeline; from polycl.sam import load_sam; "
            "s = load_sam('litemedsam', device='cpu', download=False); "
            "print(s._encoder is None, 'openvino' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False", "False"]


def test_unknown_engine_is_an_input_error(monkeypatch):
    from polycl.errors import InputError
    from polycl.sam import load_sam

    with pytest.raises(InputError, match="unknown SAM encoder engine 'tensorrt'"):
        load_sam("litemedsam", device="cpu", download=False, encoder="tensorrt")
    monkeypatch.setenv("POLYCL_SAM_ENCODER", "fast")
    with pytest.raises(InputError, match="choose from auto, torch, openvino"):
        load_sam("litemedsam", device="cpu", download=False)
