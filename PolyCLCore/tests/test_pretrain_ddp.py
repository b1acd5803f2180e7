"""Distributed pre-training: a real two-process ``torchrun`` run on the CPU (gloo backend) of
``polycl pretrain`` on real CT. Both ranks must end with identical weights (DDP averages the
gradients; each rank trains on its own half of the anchors via DistributedSampler).

Small on purpose: 64-px slices, a 4-level encoder (8..64 channels), the middle 30% of two scans
(40 anchors: 20 per rank, batches of 10), 2 epochs.
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


def test_torchrun_two_cpu_processes_end_with_identical_weights(ts, tmp_path):
    ct = tmp_path / "ct"
    ct.mkdir()
    (ct / "example_ct.nii.gz").symlink_to(ts / "example_ct.nii.gz")
    (ct / "example_ct_dicom").symlink_to(ts / "example_ct_dicom")
    env = dict(os.environ, POLYCL_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "polycl.cli.main", "pretrain", str(ct), "--strategy", "s", "-o", str(tmp_path / "enc.pt"),
           "--size", "64", "--features", "8", "16", "32", "64", "--epochs", "2", "--batch-size", "10",
           "--device", "cpu", "--cache", str(tmp_path / "cache")]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
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
