"""The one training loop (polycl.training) under both jobs, fine-tuning and pre-training, on real CT:
one state format with the same epoch numbering, the same resume, and a process group that is left
whether training ends, fails or is cancelled (a real two-process torchrun on the CPU, gloo).

Tiny on purpose (these check mechanics; accuracy and exact resume are checked in test_finetune.py
and test_pretrain_train.py): 32-48 px slices, a 3-level U-Net (8-16-32 channels), one or two epochs.
"""

from __future__ import annotations

import multiprocessing
import os
import socket

import pytest

from polycl.errors import Cancelled, InputError
from polycl.finetune import FinetuneConfig, check_training_folder, finetune
from polycl.preprocess import PreprocessConfig
from polycl.pretrain import PretrainConfig, build_slice_dataset, find_scans, pretrain
from polycl.progress import CancelToken
from polycl.training import read_state

FEATURES = (8, 16, 32)
FT = dict(target="liver", size=48, batch_size=10, augment=False, device="cpu", features=FEATURES)


def _folders(ts, root):
    """(fine-tuning cases: example_ct_sm + its liver; pre-training scans: example_ct_sm and the DICOM series)."""
    cases, scans = root / "cases", root / "scans"
    (cases / "sm").mkdir(parents=True)
    (cases / "sm" / "image.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    (cases / "sm" / "label.nii.gz").symlink_to(ts / "example_seg_roi_subset.nii.gz")
    scans.mkdir()
    (scans / "example_ct_sm.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    (scans / "example_ct_dicom").symlink_to(ts / "example_ct_dicom", target_is_directory=True)
    return cases, scans


def test_both_jobs_write_one_state_format_and_resume_the_same_way(ts, tmp_path):
    cases, scans = _folders(ts, tmp_path)
    data = build_slice_dataset(find_scans(scans), preprocess=PreprocessConfig(size=32))
    pre = PretrainConfig(strategy="s", encoder={"name": "unet", "features": list(FEATURES)}, epochs=1, batch_size=8,
                         device="cpu")
    runs = {
        "fine-tuning": (lambda epochs, resume: finetune(cases, tmp_path / "ft", FinetuneConfig(epochs=epochs, **FT),
                                                        resume=resume), tmp_path / "ft" / "state.pt"),
        "pre-training": (lambda epochs, resume: pretrain(data, tmp_path / "enc.pt", PretrainConfig(**{
            **pre.__dict__, "epochs": epochs}), resume=resume, log=None), tmp_path / "enc.state.pt"),
    }
    keys = set()
    for kind, (run, state_path) in runs.items():
        run(1, False)
        state = read_state(state_path, kind)
        assert state["job"] == kind and state["epoch"] == 1 and [h["epoch"] for h in state["history"]] == [1]
        keys.add(frozenset(state))
        resumed = run(2, True)  # continues with epoch 2, keeping epoch 1's record
        assert [h["epoch"] for h in resumed.history] == [1, 2]
        assert resumed.history[0] == state["history"][0]
        assert read_state(state_path, kind)["epoch"] == 2
        run(2, True)  # nothing left to do: the state stays at epoch 2
        assert read_state(state_path, kind)["epoch"] == 2
    assert len(keys) == 1  # the same keys in both jobs' states
    with pytest.raises(InputError, match="holds a pre-training state, not fine-tuning"):
        read_state(tmp_path / "enc.state.pt", "fine-tuning")
    with pytest.raises(InputError, match="cannot resume: the saved run used size=48, this one 64"):
        finetune(cases, tmp_path / "ft", FinetuneConfig(epochs=3, **{**FT, "size": 64}), resume=True)
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled, match="fine-tuning stopped during its first epoch"):
        finetune(cases, tmp_path / "ft2", FinetuneConfig(epochs=1, **FT), cancel=cancel)


def test_check_training_folder_is_the_one_input_check(ts, tmp_path):
    cases, _ = _folders(ts, tmp_path)
    assert [c.name for c in check_training_folder(cases, "liver")] == ["sm"]
    with pytest.raises(InputError, match=r"(?s)1 case\(s\) cannot be used.*no voxel with value\(s\) \(2, 3\)"):
        check_training_folder(cases, "kidney")  # example_ct_sm's label holds the liver only
    with pytest.raises(InputError, match="not a folder"):
        check_training_folder(tmp_path / "missing")


def _rank(rank: int, scenario: str, port: int, cases, scans, out, results) -> None:
    """One rank of a two-process group (gloo on the CPU), as torchrun would start it."""
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cfg = FinetuneConfig(target="liver", size=32, batch_size=4, augment=False, device="cpu", features=FEATURES, epochs=1)
    cancelled = CancelToken()
    cancelled.cancel()
    try:
        if scenario == "finetune-cancelled":
            finetune(cases, out / "a", cfg, cancel=cancelled)
        elif scenario == "finetune-failed":  # b/state.pt is not a training state: fails after joining the group
            finetune(cases, out / "b", cfg, resume=True)
        else:
            data = build_slice_dataset(find_scans(scans), preprocess=PreprocessConfig(size=32))
            pretrain(data, out / "enc.pt", PretrainConfig(encoder={"name": "unet", "features": list(FEATURES)},
                                                          epochs=1, batch_size=4, device="cpu"),
                     cancel=cancelled, log=None)
        results.put((rank, scenario, "finished", dist.is_initialized()))
    except (Cancelled, InputError) as exc:
        results.put((rank, scenario, type(exc).__name__, dist.is_initialized()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_process_group_is_left_when_training_fails_or_is_cancelled(ts, tmp_path):
    """Before, fine-tuning destroyed its process group only on success. Both jobs now leave it in a
    ``finally`` and skip the final barrier on errors, so no rank hangs on a cancelled or failed run.
    Two forked ranks per case (a real gloo group, as under torchrun, without re-importing torch)."""
    cases, scans = _folders(ts, tmp_path)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "state.pt").write_bytes(b"not a training state")
    ctx = multiprocessing.get_context("fork")
    for scenario, error in (("finetune-cancelled", "Cancelled"), ("finetune-failed", "InputError"),
                            ("pretrain-cancelled", "Cancelled")):
        results, port = ctx.Queue(), _free_port()
        procs = [ctx.Process(target=_rank, args=(r, scenario, port, cases, scans, tmp_path, results)) for r in (0, 1)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        hung = [p.pid for p in procs if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
        assert not hung, f"{scenario}: rank(s) hung"
        got = sorted(results.get(timeout=5) for _ in procs)
        assert got == [(0, scenario, error, False), (1, scenario, error, False)], got  # group left on both ranks
    assert not (tmp_path / "a" / "model.pt").exists() and not list(tmp_path.glob("enc*.pt"))
