"""PolyCL example selection on real CT: every sampled triplet satisfies its strategy's definition,
impossible strategies are refused before training with what to do, draws are seeded, and slice
presence comes from the labels (or a CSV) as stated. Slices are 32 px here: sampling does not
depend on the image size, and small slices keep the test fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polycl.errors import InputError
from polycl.preprocess import PreprocessConfig, to_canonical
from polycl.pretrain import (
    UNKNOWN, SliceSelection, StrategyError, TripletSampler, build_slice_dataset, read_presence_csv,
)
from polycl.pretrain.shared_data import shared_scans
from polycl.pretrain.train import TripletDataset

PRE = PreprocessConfig(size=32)


@pytest.fixture(scope="module")
def slices(data, tmp_path_factory):
    """All shared CT (6 scans), middle 30% of each, 32 px, cached in a temporary folder."""
    return build_slice_dataset(shared_scans(data), preprocess=PRE, cache_dir=tmp_path_factory.mktemp("cache"))


def test_dataset_knows_scan_index_and_presence(slices, example_ct, example_liver, dicom_ct, dicom_liver):
    names = slices.case_names
    assert names[:2] == ["example_ct", "example_ct_dicom"] and len(names) == 6
    assert slices.images.shape[1:] == (1, 32, 32) and slices.images.dtype == torch.float32
    assert 0.0 <= float(slices.images.min()) and float(slices.images.max()) <= 1.0
    # the middle 30% of 112 slices of example_ct are canonical slices 39..72
    ct = slices.scan == 0
    assert slices.slice_index[ct].tolist() == list(range(39, 73))
    for k, (_img, lab) in enumerate([(example_ct, example_liver), (dicom_ct, dicom_liver)]):
        canon = to_canonical(lab)
        expected = canon.reshape(canon.shape[0], -1).any(1)[slices.slice_index[slices.scan == k]]
        assert slices.presence[slices.scan == k].tolist() == expected.astype(int).tolist()
    # example_ct: liver on 4 of its 34 middle slices; the DICOM series: on all 6; the rest unlabelled
    summary = {r["case"]: r for r in slices.summary()}
    assert (summary["example_ct"]["present"], summary["example_ct"]["absent"]) == (4, 30)
    assert (summary["example_ct_dicom"]["present"], summary["example_ct_dicom"]["absent"]) == (6, 0)
    assert all(summary[c]["unknown"] == summary[c]["slices"] for c in names[2:])


@pytest.mark.parametrize("strategy", ["s", "o", "m"])
def test_every_triplet_satisfies_the_definition(slices, strategy):
    sampler = TripletSampler(slices.scan, slices.presence, strategy, seed=3, case_names=slices.case_names)
    plan = sampler.plan(skip_unusable=True)
    sc, pr = slices.scan, slices.presence
    assert len(plan.anchors) == {"s": 127, "o": 40, "m": 34}[strategy]
    seen_pos, seen_neg = set(), set()
    for epoch in range(5):
        for a in plan.anchors:
            p, n = sampler.draw(a, epoch)
            assert p != a, "the positive is never the anchor itself"
            if strategy == "s":
                assert sc[p] == sc[a] and sc[n] != sc[a]
            elif strategy == "o":
                assert pr[a] != UNKNOWN and pr[p] == pr[a] and pr[n] == 1 - pr[a]
            else:
                assert sc[p] == sc[a] == sc[n]
                assert pr[a] != UNKNOWN and pr[p] == pr[a] and pr[n] == 1 - pr[a]
            seen_pos.add(p)
            seen_neg.add(n)
    if strategy == "o":  # O draws across scans: positives and negatives come from both labelled scans
        assert {int(sc[i]) for i in seen_pos} == {0, 1} and {int(sc[i]) for i in seen_neg} == {0, 1}
    # the data loader gives the same triplets as the sampler, with the matching images
    ds = TripletDataset(slices, sampler, plan.anchors)
    ds.set_epoch(2)
    a_img, p_img, n_img, idx = ds[0]
    a, p, n = idx.tolist()
    assert (a, p, n) == (int(plan.anchors[0]), *sampler.draw(int(plan.anchors[0]), 2))
    assert torch.equal(p_img, slices.images[p]) and torch.equal(n_img, slices.images[n])


def test_draws_are_seeded(slices):
    a = TripletSampler(slices.scan, slices.presence, "s", seed=1)
    b = TripletSampler(slices.scan, slices.presence, "s", seed=1)
    c = TripletSampler(slices.scan, slices.presence, "s", seed=2)
    anchors = range(0, 120, 7)
    first = [a.draw(i, 0) for i in anchors]
    assert first == [b.draw(i, 0) for i in anchors]
    assert first != [c.draw(i, 0) for i in anchors]
    assert first != [a.draw(i, 1) for i in anchors]  # a new draw every epoch


def test_impossible_strategies_are_refused_with_what_to_do(slices):
    sc, pr, names = slices.scan, slices.presence, slices.case_names
    one = sc == 0
    with pytest.raises(StrategyError, match="PolyCL-S needs at least two scans.*Add more CT volumes"):
        TripletSampler(sc[one], pr[one], "s", case_names=names).plan(skip_unusable=True)
    unlabelled = sc >= 2
    for s in ("o", "m"):
        with pytest.raises(StrategyError, match=f"PolyCL-{s.upper()} needs to know which slices contain the organ.*--labels.*--presence"):
            TripletSampler(sc[unlabelled], pr[unlabelled], s, case_names=names).plan(skip_unusable=True)
    dicom = sc == 1  # all six middle slices contain the liver
    with pytest.raises(StrategyError, match="PolyCL-O needs slices with and without the organ"):
        TripletSampler(sc[dicom], pr[dicom], "o", case_names=names).plan()
    with pytest.raises(StrategyError, match="PolyCL-M: no anchor slice.*example_ct_dicom.*raise --fraction"):
        TripletSampler(sc[dicom], pr[dicom], "m", case_names=names).plan(skip_unusable=True)
    # partly unsatisfiable: refused unless the caller opts in, and the message names scans and counts
    with pytest.raises(StrategyError, match=r"6 anchor slice\(s\): the scan has no slice with the other organ presence: "
                                            r"example_ct_dicom \(6\).*--skip-unusable"):
        TripletSampler(sc, pr, "m", case_names=names).plan()
    with pytest.raises(StrategyError, match=r"dcmqi_ct_3slice \(1\)"):  # its middle 30% is one slice
        TripletSampler(sc, pr, "s", case_names=names).plan()
    with pytest.raises(InputError, match="unknown strategy"):
        TripletSampler(sc, pr, "x")


def test_presence_csv_and_min_slices(data, tmp_path):
    scans = [s for s in shared_scans(data) if s.name in ("aorta_ct_cropped", "dcmqi_ct_3slice")]
    csv = tmp_path / "presence.csv"
    csv.write_text("case,slice,present\n" + "".join(f"aorta_ct_cropped,{s},{int(s >= 80)}\n" for s in range(57, 106)))
    ds = build_slice_dataset(scans, preprocess=PRE, selection=SliceSelection(0.3, min_slices=3), presence_csv=csv)
    aorta = ds.scan == 0
    assert ds.slice_index[aorta].tolist() == list(range(57, 106))  # middle 30% of 164
    assert ds.presence[aorta].tolist() == [int(s >= 80) for s in range(57, 106)]
    assert (ds.scan == 1).sum() == 3 and (ds.presence[ds.scan == 1] == UNKNOWN).all()  # min_slices: all 3 of 3
    plan = TripletSampler(ds.scan, ds.presence, "m", case_names=ds.case_names).plan(skip_unusable=True)
    assert len(plan.anchors) == 49
    bad = tmp_path / "bad.csv"
    bad.write_text("case,slice,present\naorta_ct_cropped,5,maybe\n")
    with pytest.raises(InputError, match="present 'maybe' must be 1/0"):
        read_presence_csv(bad)
    bad.write_text("case,slice,present\nnot_a_case,5,1\n")
    with pytest.raises(InputError, match="names case\\(s\\) not in the data: \\['not_a_case'\\]"):
        build_slice_dataset(scans, preprocess=PRE, presence_csv=bad)
    bad.write_text("case,slice,present\naorta_ct_cropped,500,1\n")
    with pytest.raises(InputError, match="has 164 slices"):
        build_slice_dataset(scans, preprocess=PRE, presence_csv=bad)


def test_cache_serves_a_second_build_without_reading_volumes(data, tmp_path, monkeypatch):
    import polycl.pretrain.dataset as dataset

    scans = [s for s in shared_scans(data) if s.name == "deeplesion_000015"]
    first = build_slice_dataset(scans, preprocess=PRE, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("deeplesion_000015-*.pt"))) == 1

    def no_reading(*_a, **_k):
        raise AssertionError("volume re-read although cached")

    monkeypatch.setattr(dataset, "load_scan", no_reading)
    second = build_slice_dataset(scans, preprocess=PRE, cache_dir=tmp_path)
    assert torch.equal(first.images, second.images) and np.array_equal(first.slice_index, second.slice_index)
    with pytest.raises(AssertionError, match="re-read"):  # other settings: a different cache entry
        build_slice_dataset(scans, preprocess=PreprocessConfig(size=48), cache_dir=tmp_path)


def test_mr_volume_is_refused(data, tmp_path):
    from polycl.pretrain import Scan

    mr = Scan("mr", data / "totalsegmentator" / "example_mr_sm.nii.gz")
    with pytest.raises(InputError, match="scan 'mr'"):
        build_slice_dataset([mr], preprocess=PRE)
