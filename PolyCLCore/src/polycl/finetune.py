"""Fine-tuning a segmentation U-Net on a folder of labelled CT (``polycl finetune``).

The paper's recipe: a (PolyCL-pretrained or random) encoder, a mirrored decoder, Dice loss,
Adam at lr 1e-3, batch 10, cosine annealing with warm restarts; here with MONAI augmentation,
a case-level train/validation split, validation Dice every epoch, the best checkpoint kept,
a resumable state saved every epoch (and on Ctrl-C) and a training-curve PNG.

Slices are axial slices of the LPS-reoriented volume, windowed and brought to ``size`` x ``size``
(resized, or with ``pixel_mm`` resampled to that pixel size and centre-padded/cropped: see
:mod:`polycl.preprocess`). Validation Dice is the 3D Dice per held-out case on that grid.

Augmentation (MONAI, ``augmentation``): "standard" (affine, intensity scale, noise) or "strong", the
recipe meant to generalise to new scanners: larger rotations and scales, elastic deformation,
field-of-view crops (zoom in), HU shifts (contrast phase), gamma contrast, noise and blur. Each
slice's random draw is seeded by (seed, epoch, slice), so a run is reproducible whatever the
number of processes and however it was resumed.

Several processes (``torchrun ... finetune``, DistributedDataParallel; :mod:`polycl.distributed`):
``batch_size`` is the *global* batch. Every epoch has one seeded permutation of the training slices
(:class:`GlobalBatchSampler`); each global batch is split into equal contiguous shares, one per
rank. The loss is MONAI's, computed on the whole global batch (each rank gathers the others'
logits, its own stay differentiable, and scales by the world size so that DDP's gradient average
is the full batch's gradient), so N processes take the same steps as one process would, up to
float rounding. Validation cases are shared out and their scores gathered. Rank 0 writes the
checkpoint, state, history and curve; the state resumes on any number of processes.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from polycl import distributed as D
from polycl.atomic import atomic_path, write_text_atomic
from polycl.cases import Case, find_labelled_cases
from polycl.checkpoint import atomic_torch_save, load_state_strict, read_checkpoint, save_checkpoint, sha256_file
from polycl.errors import Cancelled, GeometryError, InputError
from polycl.progress import CancelToken, Progress, Reporter
from polycl.io import label_on_image_grid, parse_label_spec, read_label, read_volume, select_labels
from polycl.models import resolve_model
from polycl.networks import SegmentationUNet, build_encoder
from polycl.networks.encoders import DEFAULT_FEATURES
from polycl.preprocess import (CT_WINDOW, PreprocessConfig, canonical_spacing, middle_slices, prepare_slices,
                               to_canonical, to_model_grid)
from polycl.validate import require_ct



@dataclass
class FinetuneConfig:
    target: str = "liver"  # "liver", "kidney", or label values "5" / "2,3"
    epochs: int = 30
    batch_size: int = 10
    lr: float = 1e-3
    restart_epochs: int = 5  # CosineAnnealingWarmRestarts period, in epochs
    label_fraction: float = 1.0  # fraction of training slices whose labels are used
    val_fraction: float = 0.2  # fraction of cases held out (at least one when >= 2 cases)
    middle_fraction: float = 1.0  # 0.3 = the paper's middle-30% slice selection
    size: int = 256
    level: float = CT_WINDOW[0]
    width: float = CT_WINDOW[1]
    encoder: str | None = None  # PolyCL encoder: registry name (e.g. polycl-encoder-unet-o) or checkpoint path
    encoder_arch: str = "unet"  # architecture when training from random initialisation
    features: tuple[int, ...] = DEFAULT_FEATURES
    augment: bool = True
    augmentation: str = "standard"  # "standard" or "strong" (see the module docstring)
    pixel_mm: float | None = None  # in-plane spacing normalisation (mm per pixel); None: plain resize
    loss: str = "dice"  # "dice" (the paper) or "dice+bce" (converges faster from random weights)
    seed: int = 0
    device: str = "auto"
    components: int | None = None  # connected components kept at inference (default: 2 for kidney, else 1)
    keep: str = "best"  # "best": the epoch with the best validation Dice; "last": the final epoch
    val_cases: tuple[str, ...] = ()  # validate on exactly these cases (by name), train on the others

    def label_values(self) -> tuple[int, ...]:
        return parse_target(self.target)

    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(self.level, self.width, self.size, self.pixel_mm)


def parse_target(target: str) -> tuple[int, ...]:
    """The label values of a fine-tuning target (:func:`polycl.io.parse_label_spec`)."""
    return parse_label_spec(target)


@dataclass
class CaseSlices:
    """One case's preprocessed slices: images (n, 1, S, S) float16 in 0..1, masks (n, 1, S, S) uint8."""

    name: str
    images: torch.Tensor
    masks: torch.Tensor
    note: str = ""


def load_case(case: Case, cfg: FinetuneConfig) -> CaseSlices:
    """Read, check and preprocess one labelled case (raises InputError/GeometryError naming the files)."""
    image = read_volume(case.image)
    require_ct(image)
    label = read_label(case.label)
    note = ""
    if not image.geometry.same_grid_as(label.geometry, image.shape, label.shape):
        try:
            label = label_on_image_grid(label, image)
        except GeometryError as exc:
            raise GeometryError(f"case {case.name}: label {case.label.name} does not match image {case.image.name}: {exc}") from None
        note = "label resampled onto the image grid in physical space"
    mask = select_labels(label.array, cfg.label_values())
    if not mask.any():
        raise InputError(f"case {case.name}: label {case.label.name} has no voxel with value(s) {cfg.label_values()}")
    hu = to_canonical(image)
    mask = to_canonical(image.with_array(mask))
    keep = middle_slices(hu.shape[0], cfg.middle_fraction)
    sx, sy, _ = canonical_spacing(image)
    images = prepare_slices(hu[keep], cfg.preprocess(), (sy, sx)).half()
    masks = to_model_grid(torch.from_numpy(mask[keep]).float().unsqueeze(1), cfg.preprocess(), (sy, sx),
                          mode="nearest").to(torch.uint8)
    return CaseSlices(case.name, images, masks, note)


def split_cases(cases: list[Case], val_fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Case-level split. One case, or ``val_fraction`` 0: every case is both train and validation (reported)."""
    if len(cases) < 2 or val_fraction <= 0:
        return list(cases), list(cases)
    order = list(cases)
    random.Random(seed).shuffle(order)
    n_val = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    return sorted(order[n_val:], key=lambda c: c.name), sorted(order[:n_val], key=lambda c: c.name)


class SliceDataset(Dataset):
    """(image, mask) slice pairs with optional MONAI augmentation, drawn per (seed, epoch, slice)."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, augment: bool, seed: int,
                 augmentation: str = "standard") -> None:
        self.images, self.masks = images, masks
        self.seed, self.epoch = int(seed), 0
        self.transform = augmentations(augmentation, images.shape[-1]) if augment else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        item = {"image": self.images[i].float(), "label": self.masks[i].float()}
        if self.transform is not None:
            seed = np.random.SeedSequence([self.seed, self.epoch, int(i)]).generate_state(1)[0]
            self.transform.set_random_state(seed=int(seed))
            item = self.transform(item)
        return torch.as_tensor(item["image"]), torch.as_tensor(item["label"])


class GlobalBatchSampler(Sampler):
    """Batches of slice indices: per epoch a permutation seeded by (seed, epoch), cut into global
    batches; rank ``r`` of ``world_size`` yields its contiguous share of each.

    The global batch is ``batch_size``, or the number of slices when there are fewer, rounded down
    to a multiple of ``world_size``; a last incomplete global batch is dropped (when there is more
    than one). Steps per epoch do not depend on the number of ranks, so a state saved by N
    processes resumes on M."""

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world_size, self.epoch = int(n), int(seed), int(rank), int(world_size), 0
        self.global_batch = min(int(batch_size), self.n) // self.world_size * self.world_size
        if self.global_batch < 1:
            raise InputError(f"{n} training slice(s) cannot be shared by {world_size} processes "
                             f"(batch size {batch_size}); use fewer processes or more data")
        self.local_batch = self.global_batch // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.global_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        order = torch.randperm(self.n, generator=g).tolist()
        lo = self.rank * self.local_batch
        for step in range(len(self)):
            batch = order[step * self.global_batch:(step + 1) * self.global_batch]
            yield batch[lo:lo + self.local_batch]


def global_batch_loss(loss_fn: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor,
                      info: D.DistInfo) -> torch.Tensor:
    """``loss_fn`` on the global batch: every rank's logits and targets gathered in rank order, this
    rank's logits kept differentiable. Multiply by the world size before ``backward`` so that DDP's
    gradient average equals the gradient of this loss (one process: just ``loss_fn(logits, target)``)."""
    if not info.enabled:
        return loss_fn(logits, target)
    import torch.distributed as dist

    parts = [torch.empty_like(logits) for _ in range(info.world_size)]
    dist.all_gather(parts, logits.detach().contiguous())
    parts[info.rank] = logits
    targets = [torch.empty_like(target) for _ in range(info.world_size)]
    dist.all_gather(targets, target.contiguous())
    return loss_fn(torch.cat(parts), torch.cat(targets))


def augmentations(kind: str, size: int):
    """MONAI transforms on {"image": (1, S, S) 0..1, "label": (1, S, S)}; ``kind`` "standard" or "strong".

    The window maps 400 HU to 0..1, so an intensity shift of 0.1 is 40 HU (a contrast phase's
    difference in liver enhancement is of that order). No left-right flips: the liver is on the
    patient's right, and a flipped slice is anatomy that never occurs."""
    from monai.transforms import (Compose, Rand2DElasticd, RandAdjustContrastd, RandAffined, RandGaussianNoised,
                                  RandGaussianSmoothd, RandScaleIntensityd, RandShiftIntensityd, RandZoomd)

    if kind == "standard":
        return Compose([
            RandAffined(keys=["image", "label"], prob=0.7, rotate_range=(math.radians(12),), scale_range=(0.12, 0.12),
                        translate_range=(12, 12), mode=("bilinear", "nearest"), padding_mode="zeros"),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.3),
            RandGaussianNoised(keys="image", prob=0.2, std=0.02),
        ])
    if kind != "strong":
        raise InputError(f"unknown augmentation '{kind}'; use standard or strong")
    shift = size / 10
    return Compose([
        RandAffined(keys=["image", "label"], prob=0.8, rotate_range=(math.radians(15),), scale_range=(0.25, 0.25),
                    shear_range=(0.05, 0.05), translate_range=(shift, shift), mode=("bilinear", "nearest"),
                    padding_mode="zeros"),
        Rand2DElasticd(keys=["image", "label"], prob=0.25, spacing=(size // 4, size // 4), magnitude_range=(1, 3),
                       mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandZoomd(keys=["image", "label"], prob=0.25, min_zoom=1.0, max_zoom=1.4, mode=("bilinear", "nearest"),
                  keep_size=True),  # a smaller field of view
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.3),
        RandScaleIntensityd(keys="image", factors=0.15, prob=0.3),
        RandGaussianSmoothd(keys="image", sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), prob=0.2),
        RandGaussianNoised(keys="image", prob=0.3, std=0.03),
    ])


def build_model(cfg: FinetuneConfig) -> tuple[SegmentationUNet, dict, str]:
    """The U-Net to fine-tune: encoder from a PolyCL checkpoint (head dropped) or random."""
    if cfg.encoder:
        entry = resolve_model(cfg.encoder, kind="encoder")  # a registry name or a checkpoint path
        ckpt = read_checkpoint(entry.path, sha256=entry.sha256, kind="encoder")
        encoder = build_encoder(ckpt["config"])
        load_state_strict(encoder, ckpt["state_dict"], str(entry.path))
        enc_config, init = dict(ckpt["config"]), f"PolyCL encoder {Path(cfg.encoder).name} ({ckpt.get('meta', {}).get('strategy', '?')})"
    else:
        enc_config = {"name": cfg.encoder_arch, "in_channels": 1, "features": list(cfg.features)}
        encoder, init = build_encoder(enc_config), "random initialisation"
    return SegmentationUNet(encoder, 1), {"encoder": enc_config, "out_channels": 1}, init


def make_loss(name: str) -> torch.nn.Module:
    """MONAI's soft Dice on sigmoid outputs, batch-wise (empty slices do not divide by zero);
    "dice+bce" adds binary cross-entropy (MONAI DiceCELoss)."""
    from monai.losses import DiceCELoss, DiceLoss

    if name == "dice":
        return DiceLoss(sigmoid=True, batch=True)
    if name == "dice+bce":
        return DiceCELoss(sigmoid=True, batch=True)
    raise InputError(f"unknown loss '{name}'; use dice or dice+bce")


@torch.inference_mode()
def validation_dice(model: torch.nn.Module, cases: list[CaseSlices], device: torch.device, batch: int = 16) -> dict[str, float]:
    from monai.metrics import compute_dice

    model.eval()
    scores = {}
    for c in cases:
        preds = []
        for s in range(0, len(c.images), batch):
            preds.append((torch.sigmoid(model(c.images[s:s + batch].float().to(device))) > 0.5).cpu())
        pred = torch.cat(preds).permute(1, 0, 2, 3).unsqueeze(0).float()  # (1, 1, z, S, S)
        gt = c.masks.permute(1, 0, 2, 3).unsqueeze(0).float()
        scores[c.name] = float(compute_dice(pred, gt, include_background=True, ignore_empty=False).item())
    model.train()
    return scores


def plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [h["loss"] for h in history], "o-", label="train Dice loss")
    ax.plot(epochs, [h["val_dice"] for h in history], "s-", label="validation Dice")
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


@dataclass
class FinetuneResult:
    model_path: Path
    best_val_dice: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    train_cases: list[str] = field(default_factory=list)
    val_cases: list[str] = field(default_factory=list)


def finetune(data_dir: str | Path, out_dir: str | Path, cfg: FinetuneConfig, *, resume: bool = False,
             progress: Progress | None = None, cancel: CancelToken | None = None) -> FinetuneResult:
    """Fine-tune on ``data_dir`` and write ``model.pt`` (best), ``state.pt`` (resumable), ``history.json``,
    ``training_curve.png`` and ``model.json`` into ``out_dir``. All cases are checked before training.

    ``progress(steps_done, steps, message)`` after every optimiser step and every epoch (the epoch's
    message carries its loss and validation Dice; rank 0 only under torchrun). A cancelled ``cancel``
    token, like Ctrl-C (SIGINT), saves the resumable state of the last finished epoch and raises
    :class:`~polycl.errors.Cancelled`."""
    out = Path(out_dir)
    state_path = out / "state.pt"
    if resume and not state_path.is_file():
        raise InputError(f"{state_path}: nothing to resume (no saved training state)")
    if not resume and (out / "model.pt").exists():
        raise InputError(f"{out} already holds a model; choose another folder or pass --resume")
    if cfg.keep not in ("best", "last"):
        raise InputError(f"keep must be 'best' or 'last', got '{cfg.keep}'")
    if not 0 < cfg.label_fraction <= 1:
        raise InputError(f"label fraction must be in (0, 1], got {cfg.label_fraction}")
    if cfg.augmentation not in ("standard", "strong"):
        raise InputError(f"unknown augmentation '{cfg.augmentation}'; use standard or strong")
    if cfg.pixel_mm is not None and not cfg.pixel_mm > 0:
        raise InputError(f"pixel size must be positive (mm), got {cfg.pixel_mm}")
    cases = find_labelled_cases(data_dir)
    if cfg.val_cases:
        names = {c.name for c in cases}
        unknown = sorted(set(cfg.val_cases) - names)
        if unknown or set(cfg.val_cases) >= names:
            raise InputError(f"validation cases {list(cfg.val_cases)}: " + (f"not in {data_dir}: {unknown}" if unknown
                             else "every case would be a validation case; leave at least one to train on"))
        train_c = [c for c in cases if c.name not in cfg.val_cases]
        val_c = [c for c in cases if c.name in cfg.val_cases]
    else:
        train_c, val_c = split_cases(cases, cfg.val_fraction, cfg.seed)
    loaded, problems = {}, []
    for c in cases:  # check everything before training starts
        try:
            loaded[c.name] = load_case(c, cfg)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError(f"{len(problems)} case(s) cannot be used; nothing was trained:\n  - " + "\n  - ".join(problems))

    info = D.from_env()
    device = D.rank_device(cfg.device, info)
    info = D.setup(device)
    torch.manual_seed(cfg.seed)
    images = torch.cat([loaded[c.name].images for c in train_c])
    masks = torch.cat([loaded[c.name].masks for c in train_c])
    n_keep = max(1, round(cfg.label_fraction * len(images)))
    keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(images))[:n_keep])
    images, masks = images[keep], masks[keep]
    dataset = SliceDataset(images, masks, cfg.augment, cfg.seed, cfg.augmentation)
    sampler = GlobalBatchSampler(len(dataset), cfg.batch_size, seed=cfg.seed, rank=info.rank,
                                 world_size=info.world_size)
    loader = DataLoader(dataset, batch_sampler=sampler)
    net, net_config, init = build_model(cfg)  # the same initial weights on every rank (same seed)
    net.to(device).train()
    model = net
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = len(loader)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=max(1, cfg.restart_epochs * steps_per_epoch))
    loss_fn = make_loss(cfg.loss)
    history: list[dict] = []
    start_epoch, best, best_epoch = 1, -1.0, 0
    if resume:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        load_state_strict(net, state["model"], str(state_path))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, best_epoch = state["history"], state["best"], state["best_epoch"]
        start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["torch_rng"])
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    meta_common = {
        "target": cfg.target, "target_values": list(cfg.label_values()),
        "components": cfg.components or (2 if cfg.target == "kidney" or len(cfg.label_values()) == 2 else 1),
        "preprocess": cfg.preprocess().to_dict(), "init": init, "train_cases": [c.name for c in train_c],
        "val_cases": [c.name for c in val_c], "label_fraction": cfg.label_fraction, "config": _jsonable(asdict(cfg)),
        "world_size": info.world_size,
    }
    use_amp = device.type == "cuda"
    epoch = start_epoch - 1

    def save_state(epoch_done: int) -> None:
        if info.is_main:
            atomic_torch_save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "epoch": epoch_done, "history": history,
                               "best": best, "best_epoch": best_epoch, "torch_rng": torch.get_rng_state(),
                               "world_size": info.world_size}, state_path)

    report = Reporter(progress if info.is_main else None, cancel)
    total_steps = cfg.epochs * steps_per_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            t0, losses = time.perf_counter(), []
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            for step, (x, y) in enumerate(loader):
                report.check()  # before the step: a cancelled run never changes the weights of a saved epoch
                x, y = x.to(device), y.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = model(x)
                loss = global_batch_loss(loss_fn, logits.float(), y, info)
                optimizer.zero_grad(set_to_none=True)
                (loss * info.world_size).backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                report((epoch - 1) * steps_per_epoch + step + 1, total_steps,
                       f"epoch {epoch}/{cfg.epochs} step {step + 1}/{steps_per_epoch} loss {losses[-1]:.3f}")
            mine = validation_dice(net, D.shard([loaded[c.name] for c in val_c], info), device)
            scores = {k: v for part in D.gather_objects(info, mine) for k, v in part.items()}
            scores = {c.name: scores[c.name] for c in val_c}  # case order, whatever rank scored it
            val = float(np.mean(list(scores.values())))
            record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_dice": val, "val_per_case": scores,
                      "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t0}
            history.append(record)
            if cfg.keep == "last" or val > best:  # "best"/"best_epoch" describe the kept checkpoint
                best, best_epoch = val, epoch
                digests = D.gather_digests(info, D.weights_digest(net))
                if info.is_main:
                    save_checkpoint(out / "model.pt", net, net_config, kind="segmentation",
                                    meta={**meta_common, "epoch": epoch, "scores": {"val_dice": val},
                                          "rank_weight_sha256": digests})
            save_state(epoch)
            if info.is_main:
                write_text_atomic(out / "history.json", json.dumps(history, indent=1))
                plot_curve(history, out / "training_curve.png")
            report(epoch * steps_per_epoch, total_steps, f"epoch {epoch}/{cfg.epochs}: loss {record['loss']:.3f}, "
                                                         f"validation Dice {val:.3f} (best {best:.3f})")
    except (KeyboardInterrupt, Cancelled):  # state.pt already holds the last finished epoch (saved at its end)
        if not history:
            raise Cancelled("fine-tuning stopped during its first epoch; nothing to resume") from None
        raise Cancelled(f"fine-tuning stopped after epoch {history[-1]['epoch']}; "
                        f"resume with --resume (state in {state_path})") from None

    result = FinetuneResult(out / "model.pt", best, best_epoch, history, [c.name for c in train_c], [c.name for c in val_c])
    if info.is_main:
        write_model_json(out, result, cfg, init)
    D.teardown(info)
    return result


def write_model_json(out: Path, result: FinetuneResult, cfg: FinetuneConfig, init: str, name: str | None = None) -> None:
    """Registry entry beside the weights, so the folder can be installed as a user model."""
    held_out = result.val_cases != result.train_cases
    meta = {
        "name": name or out.name, "file": "model.pt", "kind": "segmentation", "target": cfg.target,
        "sha256": sha256_file(result.model_path),
        "description": f"U-Net fine-tuned from {init}, best epoch {result.best_epoch}/{cfg.epochs}",
        "training_data": f"{len(result.train_cases)} case(s): {', '.join(result.train_cases)}",
        "scores": {("val_dice" if held_out else "train_dice"): round(result.best_val_dice, 4)},
    }
    write_text_atomic(out / "model.json", json.dumps(meta, indent=2))


def _jsonable(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
