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


def _timed_step(ctx, name, n_slices, forward, loss_of, params, lr):
    """Time one Adam step of ``loss_of(forward())`` (bf16 autocast of the forward pass on CUDA)."""
    device = torch.device(ctx.device)
    optimizer = torch.optim.Adam(params, lr=lr)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = forward()
        loss = loss_of(out.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    _, seconds, gpu = ctx.timed(step)
    return Row("train", name, ctx.device, seconds, n_slices=n_slices, unit="step", peak_gpu_mb=gpu)


def run(ctx):
    device = torch.device(ctx.device)
    vol = read_volume(ctx.data / "totalsegmentator" / "example_ct.nii.gz")
    liver = select_labels(read_label(ctx.data / "totalsegmentator" / "example_seg_fast_force_split.nii.gz").array, 5)
    slices = prepare_slices(to_canonical(vol), PreprocessConfig())  # (112, 1, 256, 256)
    masks = resize_slices(torch.from_numpy(to_canonical(vol.with_array(liver))).float().unsqueeze(1), 256, mode="nearest")

    encoder, head = UNetEncoder().to(device), ProjectionHead(256, 256).to(device)
    batch = slices[torch.arange(60) % len(slices)].to(device)
    pretrain = _timed_step(ctx, "pretrain step (20 triplets, 256 px)", 60, lambda: head(encoder(batch)[-1]),
                           lambda z: polycl_loss(z[:20], z[20:40], z[40:]),
                           [*encoder.parameters(), *head.parameters()], lr=1e-4)

    model = build_segmentation_model({"encoder": {"name": "unet"}, "out_channels": 1}).to(device)
    x, y = slices[40:50].to(device), masks[40:50].to(device)
    dice_loss = DiceLoss(sigmoid=True, batch=True)
    finetune = _timed_step(ctx, "finetune step (batch 10, 256 px)", 10, lambda: model(x),
                           lambda logits: dice_loss(logits, y), model.parameters(), lr=1e-3)
    return [pretrain, finetune]
