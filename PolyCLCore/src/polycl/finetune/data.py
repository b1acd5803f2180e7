"""Fine-tuning data: the input check, case loading and splitting, slice datasets and batches.

Slices are axial slices of the LPS-reoriented volume, windowed and brought to ``size`` x ``size``
(resized, or with ``pixel_mm`` resampled to that pixel size and centre-padded/cropped: see
:mod:`polycl.preprocess`). Each slice's augmentation is seeded by (seed, epoch, slice) and each
epoch's batches by (seed, epoch), so a run is reproducible whatever the number of processes and
however it was resumed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from polycl.cases import Case, find_labelled_cases
from polycl.errors import GeometryError, InputError
from polycl.finetune.augment import augmentations
from polycl.finetune.config import FinetuneConfig, parse_target
from polycl.io import label_on_image_grid, read_label, read_volume, select_labels
from polycl.preprocess import canonical_spacing, middle_slices, prepare_slices, to_canonical, to_model_grid
from polycl.validate import require_ct
from polycl.volume import Volume


@dataclass
class CaseSlices:
    """One case's preprocessed slices: images (n, 1, S, S) float16 in 0..1, masks (n, 1, S, S) uint8."""

    name: str
    images: torch.Tensor
    masks: torch.Tensor
    note: str = ""


def read_case(case: Case, values: tuple[int, ...]) -> tuple[Volume, np.ndarray, str]:
    """(CT volume, 0/1 mask of ``values`` on its grid (z, y, x), note) of one case; raises
    :class:`InputError` naming the files when the image is not CT, the label does not fit the
    image in physical space, or it has none of ``values``."""
    image = read_volume(case.image)
    require_ct(image)
    label = read_label(case.label)
    note = ""
    if not image.geometry.same_grid_as(label.geometry, image.shape, label.shape):
        try:
            label = label_on_image_grid(label, image)
        except GeometryError as exc:
            raise GeometryError(f"case {case.name}: label {case.label.name} does not match image {case.image.name}: "
                                f"{exc}") from None
        note = "label resampled onto the image grid in physical space"
    mask = select_labels(label.array, values)
    if not mask.any():
        raise InputError(f"case {case.name}: label {case.label.name} has no voxel with value(s) {values}")
    return image, mask, note


def _every_case(cases: list[Case], read: Callable[[Case], object]) -> dict[str, object]:
    """``read`` every case; one :class:`InputError` listing every case that failed."""
    done, problems = {}, []
    for c in cases:
        try:
            done[c.name] = read(c)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError(f"{len(problems)} case(s) cannot be used; nothing was trained:\n  - " + "\n  - ".join(problems))
    return done


def check_training_folder(folder: str | Path, target: str = "liver") -> list[Case]:
    """The labelled cases of ``folder`` (imagesTr/ + labelsTr/, or one folder per case), each read
    and checked as fine-tuning will use it (CT intensities, label on the image in physical space,
    ``target`` present). Raises one :class:`InputError` listing every problem. The one input check
    of fine-tuning: the command line, the Slicer panel and the web page call it."""
    values = parse_target(target)
    cases = find_labelled_cases(folder)
    _every_case(cases, lambda c: read_case(c, values)[2])  # keep only the notes, not the volumes
    return cases


def load_case(case: Case, cfg: FinetuneConfig) -> CaseSlices:
    """Read, check and preprocess one labelled case (raises InputError/GeometryError naming the files)."""
    image, mask, note = read_case(case, cfg.label_values())
    hu = to_canonical(image)
    mask = to_canonical(image.with_array(mask))
    keep = middle_slices(hu.shape[0], cfg.middle_fraction)
    sx, sy, _ = canonical_spacing(image)
    images = prepare_slices(hu[keep], cfg.preprocess(), (sy, sx)).half()
    masks = to_model_grid(torch.from_numpy(mask[keep]).float().unsqueeze(1), cfg.preprocess(), (sy, sx),
                          mode="nearest").to(torch.uint8)
    return CaseSlices(case.name, images, masks, note)


def load_cases(cases: list[Case], cfg: FinetuneConfig) -> dict[str, CaseSlices]:
    """Every case preprocessed, by name; all problems in one :class:`InputError`."""
    return _every_case(cases, lambda c: load_case(c, cfg))


def split_cases(cases: list[Case], val_fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Case-level split. One case, or ``val_fraction`` 0: every case is both train and validation (reported)."""
    if len(cases) < 2 or val_fraction <= 0:
        return list(cases), list(cases)
    order = list(cases)
    random.Random(seed).shuffle(order)
    n_val = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    return sorted(order[n_val:], key=lambda c: c.name), sorted(order[:n_val], key=lambda c: c.name)


def choose_split(cases: list[Case], cfg: FinetuneConfig, where: str | Path) -> tuple[list[Case], list[Case]]:
    """(training, validation) cases: ``cfg.val_cases`` by name, else :func:`split_cases`."""
    if not cfg.val_cases:
        return split_cases(cases, cfg.val_fraction, cfg.seed)
    names = {c.name for c in cases}
    unknown = sorted(set(cfg.val_cases) - names)
    if unknown or set(cfg.val_cases) >= names:
        raise InputError(f"validation cases {list(cfg.val_cases)}: " + (f"not in {where}: {unknown}" if unknown
                         else "every case would be a validation case; leave at least one to train on"))
    return [c for c in cases if c.name not in cfg.val_cases], [c for c in cases if c.name in cfg.val_cases]


def training_slices(loaded: dict[str, CaseSlices], train: list[Case], cfg: FinetuneConfig) -> "SliceDataset":
    """The training cases' slices, ``cfg.label_fraction`` of them (a seeded choice), as a dataset."""
    images = torch.cat([loaded[c.name].images for c in train])
    masks = torch.cat([loaded[c.name].masks for c in train])
    n_keep = max(1, round(cfg.label_fraction * len(images)))
    keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(images))[:n_keep])
    return SliceDataset(images[keep], masks[keep], cfg.augment, cfg.seed, cfg.augmentation)


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


