"""Stage 'train': one optimisation step at the paper's settings, to estimate training times.

* pre-training: PolyCL U-Net encoder + projection head, batch of 20 anchors with their positives
  and negatives (60 slices of 256 x 256), the PolyCL loss, Adam;
* fine-tuning: the segmentation U-Net, batch 10 of 256 x 256 slices, MONAI Dice loss, Adam.

Inputs are real slices of ``example_ct`` (windowed, 256 px). Time per step is the best of
``--repeats`` (after a warm-up step when repeats > 1); per-slice time divides by the slices in a step.
Multiply by steps per epoch to plan a run (``slices / batch``).
"""

import torch
from benchmark import Row
from monai.losses import DiceLoss

from polycl.io import read_label, read_volume, select_labels
from polycl.networks import ProjectionHead, UNetEncoder, build_segmentation_model
from polycl.preprocess import PreprocessConfig, prepare_slices, resize_slices, to_canonical
from polycl.pretrain.loss import polycl_loss


def run(ctx):
    device = torch.device(ctx.device)
    vol = read_volume(ctx.data / "totalsegmentator" / "example_ct.nii.gz")
    liver = select_labels(read_label(ctx.data / "totalsegmentator" / "example_seg_fast_force_split.nii.gz").array, 5)
    slices = prepare_slices(to_canonical(vol), PreprocessConfig())  # (112, 1, 256, 256)
    masks = resize_slices(torch.from_numpy(to_canonical(vol.with_array(liver))).float().unsqueeze(1), 256, mode="nearest")
    rows = []

    encoder, head = UNetEncoder().to(device), ProjectionHead(256, 256).to(device)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-4)
    batch = slices[torch.arange(60) % len(slices)].to(device)

    def pretrain_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            z = head(encoder(batch)[-1])
        loss = polycl_loss(z[:20], z[20:40], z[40:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    _, seconds, gpu = ctx.timed(pretrain_step)
    rows.append(Row("train", "pretrain step (20 triplets, 256 px)", ctx.device, seconds, n_slices=60, unit="step",
                    peak_gpu_mb=gpu))

    model = build_segmentation_model({"encoder": {"name": "unet"}, "out_channels": 1}).to(device)
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceLoss(sigmoid=True, batch=True)
    x, y = slices[40:50].to(device), masks[40:50].to(device)

    def finetune_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt2.zero_grad(set_to_none=True)
        loss.backward()
        opt2.step()

    _, seconds, gpu = ctx.timed(finetune_step)
    rows.append(Row("train", "finetune step (batch 10, 256 px)", ctx.device, seconds, n_slices=10, unit="step",
                    peak_gpu_mb=gpu))
    return rows
