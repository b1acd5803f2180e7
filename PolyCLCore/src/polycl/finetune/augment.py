"""MONAI augmentation of training slices: "standard" or "strong" (meant to generalise to new scanners)."""

from __future__ import annotations

import math

from polycl.errors import InputError


def augmentations(kind: str, size: int):
    """MONAI transforms on {"image": (1, S, S) 0..1, "label": (1, S, S)}; ``kind`` "standard" or "strong".

    "standard": affine, intensity scale, noise. "strong": larger rotations and scales, elastic
    deformation, field-of-view crops (zoom in), HU shifts (contrast phase), gamma contrast, noise
    and blur. The window maps 400 HU to 0..1, so an intensity shift of 0.1 is 40 HU (a contrast
    phase's difference in liver enhancement is of that order). No left-right flips: the liver is
    on the patient's right, and a flipped slice is anatomy that never occurs."""
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
