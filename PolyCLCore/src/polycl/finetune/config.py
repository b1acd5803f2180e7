"""Fine-tuning settings (:class:`FinetuneConfig`), checked before anything is read or written."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from polycl.errors import InputError
from polycl.io import parse_label_spec
from polycl.networks.encoders import DEFAULT_FEATURES
from polycl.preprocess import CT_WINDOW, PreprocessConfig

AUGMENTATIONS = ("standard", "strong")
LOSSES = ("dice", "dice+bce")


@dataclass
class FinetuneConfig:
    target: str = "liver"  # "liver", "kidney", or label values "5" / "2,3"
    epochs: int = 30
    batch_size: int = 10  # the global batch (all processes together)
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
    augmentation: str = "standard"  # "standard" or "strong" (see polycl.finetune.augment)
    pixel_mm: float | None = None  # in-plane spacing normalisation (mm per pixel); None: plain resize
    loss: str = "dice"  # "dice" (the paper) or "dice+bce" (converges faster from random weights)
    seed: int = 0
    device: str = "auto"
    components: int | None = None  # connected components kept at inference (default: 2 for kidney, else 1)
    keep: str = "best"  # "best": the epoch with the best validation Dice; "last": the final epoch
    val_cases: tuple[str, ...] = ()  # validate on exactly these cases (by name), train on the others

    def validate(self) -> "FinetuneConfig":
        """Raise :class:`InputError` naming the first bad setting; returns ``self``."""
        self.label_values()
        checks = [
            (self.epochs >= 1 and self.batch_size >= 1, f"epochs and batch size must be at least 1, got {self.epochs} "
                                                        f"and {self.batch_size}"),
            (self.lr > 0 and self.restart_epochs >= 1, "learning rate and restart period must be positive"),
            (self.keep in ("best", "last"), f"keep must be 'best' or 'last', got '{self.keep}'"),
            (0 < self.label_fraction <= 1, f"label fraction must be in (0, 1], got {self.label_fraction}"),
            (0 <= self.val_fraction < 1, f"validation fraction must be in [0, 1), got {self.val_fraction}"),
            (0 < self.middle_fraction <= 1, f"middle fraction must be in (0, 1], got {self.middle_fraction}"),
            (self.size >= 16, f"slice size must be at least 16 px, got {self.size}"),
            (self.augmentation in AUGMENTATIONS, f"unknown augmentation '{self.augmentation}'; use standard or strong"),
            (self.loss in LOSSES, f"unknown loss '{self.loss}'; use dice or dice+bce"),
            (self.pixel_mm is None or self.pixel_mm > 0, f"pixel size must be positive (mm), got {self.pixel_mm}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        return self

    def label_values(self) -> tuple[int, ...]:
        return parse_target(self.target)

    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(self.level, self.width, self.size, self.pixel_mm)

    def components_kept(self) -> int:
        return self.components or (2 if self.target == "kidney" or len(self.label_values()) == 2 else 1)

    def to_json(self) -> dict:
        """Plain values (tuples as lists): for checkpoints' meta and the resume check."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def parse_target(target: str) -> tuple[int, ...]:
    """The label values of a fine-tuning target (:func:`polycl.io.parse_label_spec`)."""
    return parse_label_spec(target)
