"""PolyCL pre-training on real CT: the loss falls, checkpoints are what fine-tuning loads (encoder
only; the projection head only in the training state), --resume continues exactly, impossible
strategies and cancellation write nothing, and ``polycl pretrain`` -> ``polycl finetune --encoder``
-> ``polycl segment`` works end to end.

To stay within the suite's budget these runs are SMALL: 64-px slices, a 4-level U-Net encoder
(8-16-32-64 channels), the middle 30% of two scans (example_ct: 34 slices, the DICOM series: 6),
i.e. 2 steps of 20 anchors per epoch. The loss-falls test uses lr 1e-3 (the paper's 1e-4 needs far
more steps than a unit test can afford) and measures the loss on a FIXED set of triplets before
and after 4 epochs (8 steps), so batch-to-batch noise cannot fake a decrease.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polycl.checkpoint import load_state_strict, read_checkpoint
from polycl.errors import Cancelled
from polycl.networks import build_encoder
from polycl.preprocess import PreprocessConfig
from polycl.pretrain import PretrainConfig, StrategyError, TripletSampler, build_slice_dataset, polycl_loss, pretrain
from polycl.distributed import weights_digest
from polycl.pretrain.shared_data import shared_scans
from polycl.pretrain.train import PolyCLNet, load_pretrained_head
from polycl.progress import CancelToken

SMALL = {"name": "unet", "features": [8, 16, 32, 64]}


@pytest.fixture(scope="module")
def two_scans(data, tmp_path_factory):
    scans = [s for s in shared_scans(data) if s.name in ("example_ct", "example_ct_dicom")]
    return build_slice_dataset(scans, preprocess=PreprocessConfig(size=64), cache_dir=tmp_path_factory.mktemp("cache"))


def fixed_triplet_loss(net: torch.nn.Module, data, strategy: str, tau: float) -> float:
    sampler = TripletSampler(data.scan, data.presence, strategy, seed=123)
    anchors = sampler.plan(skip_unusable=True).anchors
    trip = np.array([(a, *sampler.draw(a, 0)) for a in anchors])
    net.eval()
    with torch.no_grad():
        z = [net(data.images[torch.from_numpy(trip[:, k])]) for k in range(3)]
    return float(polycl_loss(*z, tau))


def test_loss_falls_on_real_ct_and_checkpoints_fit_finetuning(two_scans, tmp_path):
    cfg = PretrainConfig(strategy="s", encoder=SMALL, epochs=4, lr=1e-3, seed=0)
    torch.manual_seed(cfg.seed)
    before = fixed_triplet_loss(PolyCLNet(build_encoder(SMALL), 256), two_scans, "s", cfg.temperature)
    progress = []
    result = pretrain(two_scans, tmp_path / "enc.pt", cfg, log=None,
                      progress=lambda d, t, m: progress.append(d / t))
    encoder, head = load_pretrained_head(result.state_path)
    net = PolyCLNet(encoder, 256)
    net.head = head
    after = fixed_triplet_loss(net, two_scans, "s", cfg.temperature)
    print(f"fixed-triplet loss {before:.4f} -> {after:.4f}; epoch means {[round(h['loss'], 4) for h in result.history]}")
    assert after < before - 0.05, (before, after)
    assert len(result.history) == 4 and progress[-1] == pytest.approx(1.0)

    # the encoder checkpoint: encoder weights only, config + provenance; the head lives in the state file
    ckpt = read_checkpoint(result.encoder_path, kind="encoder")
    assert ckpt["config"] == SMALL
    assert not any(k.startswith("head") for k in ckpt["state_dict"])
    meta = ckpt["meta"]
    assert meta["strategy"] == "s" and meta["epochs"] == 4 and meta["tau"] == pytest.approx(1 / 20)
    assert [r["case"] for r in meta["data"]["scans"]] == ["example_ct", "example_ct_dicom"]
    assert meta["head"] == {"in_channels": 64, "out_dim": 256} and meta["state_file"] == "enc.state.pt"
    state = read_checkpoint(result.state_path, kind="training-state")
    assert state["job"] == "pre-training" and state["epoch"] == 4 and [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    assert {k for k in state["model"] if k.startswith("head.")} == {"head.linear.weight", "head.linear.bias"}
    assert result.curve_path.stat().st_size > 1000 and result.curve_path.read_bytes()[:4] == b"\x89PNG"
    # ... and it is what the fine-tuning code (polycl.finetune) builds its U-Net from
    from polycl.finetune import FinetuneConfig, build_model

    model, net_config, init = build_model(FinetuneConfig(encoder=str(result.encoder_path), size=64))
    assert net_config["encoder"] == SMALL and "PolyCL encoder" in init
    assert weights_digest(model.encoder) == weights_digest(load_state_strict(build_encoder(SMALL), ckpt["state_dict"]))
    assert model(two_scans.images[:2]).shape == (2, 1, 64, 64)


def test_resume_continues_exactly(two_scans, tmp_path):
    cfg = PretrainConfig(strategy="o", encoder=SMALL, epochs=2, seed=1, skip_unusable=True)
    straight = pretrain(two_scans, tmp_path / "a.pt", PretrainConfig(**{**cfg.__dict__, "epochs": 3}),
                        log=None)
    pretrain(two_scans, tmp_path / "b.pt", cfg, log=None)
    resumed = pretrain(two_scans, tmp_path / "b.pt", PretrainConfig(**{**cfg.__dict__, "epochs": 3}), resume=True,
                       log=None)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.rank_digests == straight.rank_digests  # same weights as an uninterrupted run
    with pytest.raises(Exception, match="cannot resume: the saved run used strategy='o'"):
        pretrain(two_scans, tmp_path / "b.pt", PretrainConfig(**{**cfg.__dict__, "strategy": "s", "epochs": 4}),
                 resume=True, log=None)


def test_refused_strategy_and_cancel_write_nothing(two_scans, tmp_path):
    with pytest.raises(StrategyError, match="example_ct_dicom"):  # its 6 middle slices all contain the liver
        pretrain(two_scans, tmp_path / "m.pt", PretrainConfig(strategy="m", encoder=SMALL, epochs=1), log=None)
    cancelled = CancelToken()
    cancelled.cancel()
    with pytest.raises(Cancelled):
        pretrain(two_scans, tmp_path / "c.pt", PretrainConfig(strategy="s", encoder=SMALL, epochs=1),
                 cancel=cancelled, log=None)
    assert list(tmp_path.iterdir()) == []


def _polycl(capsys, *args: str) -> tuple[int, str, str]:
    """``polycl ARGS`` in this process (the CLI's own main: parsing, exit codes, messages); (code, stdout, stderr)."""
    from polycl.cli.main import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_pretrain_finetune_segment_end_to_end(ts, tmp_path, monkeypatch, capsys):
    """polycl pretrain (M, example_ct only: its middle 30% has liver and non-liver slices) -> polycl finetune
    --encoder on the DICOM series -> polycl segment (the U-Net alone: no atlas prior). One epoch each at 64 px:
    this checks the chain, not accuracy.
    The commands run in this process (each subprocess would spend ~8 s of CPU importing torch and MONAI);
    the CLI as a subprocess is run by test_pretrain_ddp.py and test_finetune_ddp.py."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POLYCL_HOME", str(tmp_path / "home"))
    ct, labels, cases = tmp_path / "ct", tmp_path / "labels", tmp_path / "cases" / "dicom"
    for d in (ct, labels, cases):
        d.mkdir(parents=True)
    (ct / "example_ct.nii.gz").symlink_to(ts / "example_ct.nii.gz")
    (ct / "example_ct_dicom").symlink_to(ts / "example_ct_dicom")
    (labels / "example_ct.nii.gz").symlink_to(ts / "example_seg_fast_force_split.nii.gz")
    (cases / "image").symlink_to(ts / "example_ct_dicom")
    (cases / "label.nii.gz").symlink_to(ts / "example_seg_dicom.nii.gz")
    common = ["--size", "64", "--features", "8", "16", "32", "64", "--epochs", "1", "--device", "cpu"]

    code, _, err = _polycl(capsys, "pretrain", str(ct), "--strategy", "m", "--labels", str(labels), "-o", "enc.pt",
                           *common)
    assert code == 2, err
    assert "PolyCL-M cannot be satisfied" in err and "example_ct_dicom (6)" in err
    assert "--skip-unusable" in err and not (tmp_path / "enc.pt").exists()

    code, out, err = _polycl(capsys, "pretrain", str(ct), "--strategy", "m", "--labels", str(labels), "-o", "enc.pt",
                             "--skip-unusable", *common)
    assert code == 0, err
    assert "example_ct: 34 of 112 slices; organ present 4, absent 30, unknown 0" in out
    assert (tmp_path / "enc.pt").is_file() and (tmp_path / "enc.loss.png").is_file()
    assert read_checkpoint(tmp_path / "enc.pt", kind="encoder")["meta"]["plan"]["anchors"] == 34

    code, _, err = _polycl(capsys, "finetune", str(tmp_path / "cases"), "--encoder", "enc.pt", "-o", "model", "--size",
                           "64", "--epochs", "1", "--device", "cpu")
    assert code == 0, err
    code, _, err = _polycl(capsys, "segment", str(ts / "example_ct_dicom"), "-o", "mask.nii.gz", "--model",
                           "model/model.pt", "--device", "cpu", "--mode", "unet", "--prior", "off")
    assert code == 0, err
    from polycl.io import read_label, read_volume

    mask, image = read_label(tmp_path / "mask.nii.gz"), read_volume(ts / "example_ct_dicom")
    assert mask.shape == image.shape and set(np.unique(mask.array)) <= {0, 1}
