"""The one settings record of PolyCL Segment, shared by every front end.

The Slicer panel's parameter node (``PolyCLSegmentParameterNode``) carries fields of the same
names; the web page keeps them in its trame state (with a prefix). Both turn their state into a
:class:`Settings` with :meth:`Settings.read` before each operation, and the
:class:`~PolyCLSegmentLib.controller.Controller` maps it onto polycl's typed options, so no front
end spells an option twice.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping


@dataclass
class Settings:
    """What the user chose. Names are the parameter node's (and the web state's after its prefix).

    * ``model``: segmentation model name (bundled or fine-tuned) or a checkpoint path;
    * ``segmentMode``: polycl.segment mode: "pipeline", "refine" or "unet";
    * ``device``: "auto", "cpu" or "cuda";
    * ``samModel``: the SAM model for refinement and prompts ("litemedsam", or a downloaded SAM/MedSAM);
    * ``engine``: propagation engine ("auto", "sam2", "chain");
    * ``prior``: the atlas location prior of Segment ("auto", "on", "off"; see polycl.atlas.targets);
    * ``stopAfter``: empty slices in a row that end a propagation (0: run to the volume's ends);
    * ``overwriteOthers``: remove results from other unlocked segments (Segment Editor's "overwrite all");
    * ``propagateFromClicks``: the first include click on an empty segment fills the volume;
    * ``finetune*`` / ``labelFraction``: fine-tuning options (epochs, fraction of labelled cases in (0, 1]).
    """

    model: str = "polycl-liver"
    segmentMode: str = "pipeline"
    device: str = "auto"
    samModel: str = "litemedsam"
    engine: str = "auto"
    prior: str = "auto"
    stopAfter: int = 3
    overwriteOthers: bool = False
    propagateFromClicks: bool = True
    finetuneTarget: str = "liver"
    finetuneName: str = "my-model"
    finetuneEpochs: int = 30
    labelFraction: float = 1.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def read(cls, source: Any, prefix: str = "", rename: Mapping[str, str] | None = None) -> "Settings":
        """Settings from a parameter node (attributes) or a web state (a mapping or attributes):
        field ``name`` is read from ``prefix + rename.get(name, name)``; missing or None values keep
        the defaults. Values are converted to the field's type."""
        rename = rename or {}
        values = {}
        for f in fields(cls):
            key = prefix + rename.get(f.name, f.name)
            value = source.get(key) if isinstance(source, Mapping) else getattr(source, key, None)
            if value is None or (isinstance(value, str) and value == "" and f.type != "str"):
                continue
            values[f.name] = _convert(value, type(getattr(cls(), f.name)))
        return cls(**values)

    def replace(self, **changes) -> "Settings":
        return replace(self, **changes)

    def validate(self) -> "Settings":
        """Raise :class:`polycl.errors.InputError` for a value polycl would reject."""
        from polycl.errors import InputError
        from polycl.segment import MODES
        from polycl.propagate import ENGINES

        if self.segmentMode not in MODES:
            raise InputError(f"unknown segment mode '{self.segmentMode}' (choose from {', '.join(MODES)})")
        if self.engine not in ENGINES:
            raise InputError(f"unknown propagation engine '{self.engine}' (choose from {', '.join(ENGINES)})")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise InputError(f"unknown device '{self.device}' (auto, cpu or cuda)")
        if not 0 < float(self.labelFraction) <= 1:
            raise InputError(f"label fraction must be in (0, 1], got {self.labelFraction}")
        if int(self.finetuneEpochs) < 1 or int(self.stopAfter) < 0:
            raise InputError("epochs must be >= 1 and 'stop after' >= 0")
        return self


def _convert(value, kind):
    if kind is bool:
        return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
    return kind(value)
