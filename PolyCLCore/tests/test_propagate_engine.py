"""Propagation plumbing without model runs: SAM 2.1 registry and checkpoint loading (a random
checkpoint saved by the test), engine choice, seeds from masks, slice-index mapping, stop rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from polycl.errors import ChecksumError, InputError
from polycl.propagate import StopRule, canonical_slice_index, choose_engine, input_slice_index, seeds_from_mask
from polycl.propagate.sam2_weights import (SAM2_CHECKPOINTS, build_predictor, ensure_sam2, resolve_sam2,
                                          sam2_cache_dir, verify_cached)
from polycl.volume import Geometry, Volume


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("POLYCL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "sam2"


def test_registry_has_the_four_official_sam21_checkpoints_with_sam2_configs():
    import sam2

    root = Path(sam2.__file__).parent
    assert sorted(SAM2_CHECKPOINTS) == ["sam2.1_hiera_base_plus", "sam2.1_hiera_large", "sam2.1_hiera_small",
                                        "sam2.1_hiera_tiny"]
    for spec in SAM2_CHECKPOINTS.values():
        assert spec.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{spec.filename}"
        assert (root / spec.config).is_file(), spec.config
    assert resolve_sam2("large").name == "sam2.1_hiera_large"
    with pytest.raises(InputError, match="unknown SAM 2 checkpoint"):
        resolve_sam2("huge")


def test_engine_choice_follows_the_cache_and_is_explained(cache):
    auto = choose_engine("auto")
    assert auto.name == "chain" and "no SAM 2 weights" in auto.reason
    assert choose_engine("chain").name == "chain"
    with pytest.raises(InputError, match="--engine chain"):
        choose_engine("sam2")
    with pytest.raises(InputError, match="unknown engine"):
        choose_engine("sam3")
    with pytest.raises(InputError, match="not in"):
        ensure_sam2("small", download=False)
    cache.mkdir(parents=True)
    (cache / "sam2.1_hiera_small.pt").write_bytes(b"x")
    assert sam2_cache_dir() == cache
    picked = choose_engine("auto")
    assert picked.name == "sam2" and picked.detail == "sam2.1_hiera_small" and "found" in picked.reason


def test_random_checkpoint_saved_by_the_test_loads_and_bad_files_are_refused(tmp_path):
    torch.manual_seed(0)
    model = build_predictor(random_weights=True, device="cpu", image_size=128)
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    ck = resolve_sam2(path)
    assert ck.config == SAM2_CHECKPOINTS["sam2.1_hiera_tiny"].config and ck.spec is None
    loaded = build_predictor(ck, device="cpu", image_size=128)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert type(loaded).__name__ == "SAM2VideoPredictor" and loaded.polycl_label == "sam2.1_hiera_tiny"

    (tmp_path / "sam2.1_hiera_tiny.pt.sha256").write_text("0" * 64 + "  sam2.1_hiera_tiny.pt\n")
    with pytest.raises(ChecksumError):
        verify_cached(ck)
    broken = tmp_path / "other" / "sam2.1_hiera_tiny.pt"
    broken.parent.mkdir()
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError, match="not a usable SAM 2.1 checkpoint"):
        build_predictor(broken, device="cpu")
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="cannot tell"):
        resolve_sam2(tmp_path / "weights.pt")


def test_seeds_from_mask_few_slices_each_seed_coarse_volume_middle_slice():
    m = np.zeros((20, 8, 8), np.uint8)
    m[[4, 11], 2:5, 2:5] = 1
    assert [s.index for s in seeds_from_mask(m)] == [4, 11]
    m[5:16, 2:5, 2:5] = 1  # non-empty 4..15: a coarse volume
    seeds = seeds_from_mask(m)
    assert [s.index for s in seeds] == [10] and "middle" in seeds[0].meta["from"]
    assert [s.index for s in seeds_from_mask(m, [7])] == [7]
    with pytest.raises(InputError, match="not annotated"):
        seeds_from_mask(m, [2])
    with pytest.raises(InputError, match="empty"):
        seeds_from_mask(np.zeros_like(m))


def test_slice_index_maps_input_k_to_canonical_order():
    lps = Volume(np.zeros((5, 16, 16), np.int16), Geometry((1, 1, 2), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    flipped = Volume(lps.array, Geometry((1, 1, 2), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, -1)))  # k goes inferior
    assert [canonical_slice_index(lps, k) for k in range(5)] == [0, 1, 2, 3, 4]
    assert [canonical_slice_index(flipped, k) for k in range(5)] == [4, 3, 2, 1, 0]
    assert input_slice_index(flipped, 4) == 0
    sagittal = Volume(lps.array, Geometry((1, 1, 2), (0, 0, 0), (0, 0, 1, 0, 1, 0, 1, 0, 0)))
    with pytest.raises(InputError, match="not axial"):
        canonical_slice_index(sagittal, 1)
    with pytest.raises(InputError, match="outside"):
        canonical_slice_index(lps, 5)


def test_stop_rule_counts_vanished_slices_in_a_row():
    seed = np.zeros((10, 10), bool)
    seed[2:8, 2:8] = True  # 36 px
    hu = np.full((10, 10), 60.0)
    t = StopRule(stop_after=2, min_area_mm2=4.0, max_growth=1.5, hu_tolerance=40.0).tracker(seed, hu, 1.0)
    small = np.zeros_like(seed)
    small[4:6, 4:5] = True  # 2 px < 4 mm2
    out, stop = t.check(small, hu)
    assert not out.any() and not stop and "area" in t.reason
    out, stop = t.check(seed, hu)  # back: the run resets
    assert out.any() and not stop and t.run == 0
    assert not t.check(np.ones_like(seed), hu)[0].any()  # 100 px > 1.5 x 36: a leak
    _, stop = t.check(seed, hu - 100.0)  # far from the seed's HU
    assert stop and "vanished for 2 slices" in t.reason
    never = StopRule(stop_after=None).tracker(seed)
    assert not any(never.check(np.zeros_like(seed))[1] for _ in range(50))


def test_download_through_polycl_download_records_and_checks_sha256(cache, tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 stands in for dl.fbaipublicfiles.com."""
    import functools
    import http.server
    import threading
    import warnings

    import polycl.propagate.sam2_weights as cks

    served = tmp_path / "srv"
    served.mkdir()
    payload = np.random.default_rng(1).bytes(300_000)
    (served / "sam2.1_hiera_tiny.pt").write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(cks, "BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        seen = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no registered SHA-256" is expected: Meta publishes none
            ck = ensure_sam2("tiny", download=True, progress=lambda done, total, message: seen.append(done))
    finally:
        server.shutdown()
    assert ck.path == cache / "sam2.1_hiera_tiny.pt" and ck.path.read_bytes() == payload
    assert seen and seen[-1] == len(payload)
    import hashlib

    recorded = (cache / "sam2.1_hiera_tiny.pt.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(payload).hexdigest()
    assert choose_engine("auto").name == "sam2"
    ck.path.write_bytes(payload[:-1] + b"\0")  # the cached file changes afterwards
    with pytest.raises(ChecksumError, match="recorded"):
        ensure_sam2("tiny", download=False)


def test_seed_objects_two_organs_split_a_lobe_tip_stays_and_specks_drop():
    from polycl.propagate.seeds import slice_objects

    m = np.zeros((20, 100, 100), np.uint8)
    m[5, 10:40, 10:40] = 1   # 900 px: one kidney
    m[5, 10:35, 60:85] = 1   # 625 px: the other (over a quarter of the first): a second object
    m[5, 50:55, 20:26] = 1   # 30 px: a piece near the first, under a quarter: joins the first
    m[5, 90, 90] = 1         # 1 px: a speck, dropped
    objects = slice_objects(m[5])
    assert [int(o.sum()) for o in objects] == [930, 625]
    seeds = seeds_from_mask(m, [5])
    assert [s.obj for s in seeds] == [0, 1] and all(s.index == 5 for s in seeds)
    m[7] = m[5]  # the same pieces two slices up: their boxes overlap, so they are the same two objects
    assert sorted((s.index, s.obj) for s in seeds_from_mask(m)) == [(5, 0), (5, 1), (7, 0), (7, 1)]
    assert [s.obj for s in seeds_from_mask(m, [5], split_objects=False)] == [0]
    m[8:15, 10:40, 10:40] = 1  # a coarse volume: one seed per 3D component over 10 % of the largest
    coarse = seeds_from_mask(m)
    assert len(coarse) == 2 and {s.obj for s in coarse} == {0, 1}
