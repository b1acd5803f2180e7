"""Distributed pre-training: a real two-process ``torchrun`` run on the CPU (gloo backend) of
``polycl pretrain`` on real CT. Both ranks must end with identical weights (DDP averages the
gradients; each global minibatch is shared out between the ranks and its loss is computed on the
gathered embeddings), the two processes take the same steps as one process, and a state saved by two
processes resumes in one and ends where a straight one-process run ends.

Small on purpose: 64-px slices, a 4-level encoder (8..64 channels), the middle 30% of two scans
(global minibatches of 10 anchors, 5 per rank), 2 epochs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from polycl.checkpoint import read_checkpoint
from polycl.networks import ProjectionHead, build_encoder
from polycl.distributed import weights_digest
from polycl.pretrain.train import load_pretrained_head


def _pretrain(ct, out, cache, env, *, processes: int, epochs: int, resume: bool = False):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    cmd = [*launcher, "-m", "polycl.cli.main", "pretrain", str(ct), "--strategy", "s", "-o", str(out),
           "--size", "64", "--features", "8", "16", "32", "64", "--epochs", str(epochs), "--batch-size", "10",
           "--device", "cpu", "--cache", str(cache)] + (["--resume"] if resume else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_torchrun_two_cpu_processes_end_with_identical_weights(ts, tmp_path):
    ct = tmp_path / "ct"
    ct.mkdir()
    (ct / "example_ct.nii.gz").symlink_to(ts / "example_ct.nii.gz")
    (ct / "example_ct_dicom").symlink_to(ts / "example_ct_dicom")
    env = dict(os.environ, POLYCL_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    run = _pretrain(ct, tmp_path / "enc.pt", tmp_path / "cache", env, processes=2, epochs=2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("encoder: ") == 1  # only rank 0 reports and writes

    ckpt = read_checkpoint(tmp_path / "enc.pt", kind="encoder")
    meta = ckpt["meta"]
    assert meta["world_size"] == 2 and meta["epochs"] == 2
    digests = meta["rank_weight_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1] and meta["ranks_identical"]

    # the digests are of the weights that were saved (encoder + head from the training state)
    state = read_checkpoint(tmp_path / "enc.state.pt", kind="training-state")
    assert state["world_size"] == 2 and state["epoch"] == 2
    net = torch.nn.Module()
    net.encoder, net.head = load_pretrained_head(tmp_path / "enc.state.pt")
    assert weights_digest(net) == digests[0]
    # and training moved them away from the shared initialisation
    torch.manual_seed(0)
    init = torch.nn.Module()
    init.encoder = build_encoder(state["extra"]["encoder_config"])
    init.head = ProjectionHead(**state["extra"]["head_config"])
    assert weights_digest(init) != digests[0]


def _moved_apart(a: dict, b: dict, init: dict) -> None:
    """Two runs that took the same steps: over the whole network, their distance is under 5 % of how
    far training moved it. Not elementwise equality: Adam's first steps are about lr x the gradient's
    sign, so where a gradient is ~0 float rounding (another summation order on two processes) picks
    the step's sign. Measured: losses equal to 1e-5, distance 2.0 % of the movement (8 steps at lr
    1e-4, which move the weights very little); a run with other minibatches moves as far as training."""
    apart = moved = 0.0
    for k, w in a.items():
        if w.is_floating_point():
            moved += float((w - init[k]).norm()) ** 2
            apart += float((w - b[k]).norm()) ** 2
    assert apart ** 0.5 <= 0.05 * moved ** 0.5, (apart ** 0.5, moved ** 0.5)


def test_two_processes_take_the_steps_of_one_and_resume_on_another_world_size(ts, tmp_path):
    """One epoch on two processes, resumed to epoch 2 in one process, ends where two epochs in one
    process end: the same steps per epoch (global minibatches), the same losses, the same weights."""
    ct = tmp_path / "ct"
    ct.mkdir()
    (ct / "example_ct.nii.gz").symlink_to(ts / "example_ct.nii.gz")
    (ct / "example_ct_dicom").symlink_to(ts / "example_ct_dicom")
    env = dict(os.environ, POLYCL_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    cache = tmp_path / "cache"
    straight = _pretrain(ct, tmp_path / "one.pt", cache, env, processes=1, epochs=2)
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = _pretrain(ct, tmp_path / "two.pt", cache, env, processes=2, epochs=1)
    assert first.returncode == 0, first.stderr[-3000:]
    assert read_checkpoint(tmp_path / "two.state.pt", kind="training-state")["world_size"] == 2
    resumed = _pretrain(ct, tmp_path / "two.pt", cache, env, processes=1, epochs=2, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    one = read_checkpoint(tmp_path / "one.state.pt", kind="training-state")
    two = read_checkpoint(tmp_path / "two.state.pt", kind="training-state")
    assert [h["epoch"] for h in two["history"]] == [1, 2] and two["world_size"] == 1
    steps = [len(h["step_losses"]) for h in one["history"]]
    assert steps == [len(h["step_losses"]) for h in two["history"]] and min(steps) >= 2
    import numpy as np

    np.testing.assert_allclose([h["loss"] for h in one["history"]], [h["loss"] for h in two["history"]], rtol=1e-4)
    torch.manual_seed(0)
    init = torch.nn.Module()
    init.encoder = build_encoder(one["extra"]["encoder_config"])
    init.head = ProjectionHead(**one["extra"]["head_config"])
    _moved_apart(one["model"], two["model"], init.state_dict())
