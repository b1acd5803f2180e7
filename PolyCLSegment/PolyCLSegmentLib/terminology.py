"""Standard names and colours of the organs polycl segments, read from the module's ``.term.json``.

``Resources/Terminology/SegmentationCategoryTypeModifier-PolyCL.term.json`` is a Slicer
terminology context (the format SlicerTotalSegmentator and MONAIAuto3DSeg ship): SNOMED CT codes
and recommended display colours, plus ``PolyCLTargets`` (the model targets each entry stands
for). A new segment gets the Slicer terminology string of its target, so it says what it is in a
code any DICOM SEG reader understands. The codes are those of Slicer's "DICOM master list"
context, which every Slicer loads, so the strings refer to that context.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

TERM_FILE = Path(__file__).resolve().parents[1] / "Resources" / "Terminology" / \
    "SegmentationCategoryTypeModifier-PolyCL.term.json"
CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMY_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Term:
    """One organ: its Slicer terminology string and display colour (r, g, b in 0..1)."""

    meaning: str
    terminology: str
    color: tuple[float, float, float] | None


@functools.lru_cache(maxsize=1)
def _terms() -> dict[str, Term]:
    """target name (lower case) -> Term, from the .term.json file."""
    data = json.loads(TERM_FILE.read_text(encoding="utf-8"))
    out = {}
    for category in data["SegmentationCodes"]["Category"]:
        cat = f"{category['CodingSchemeDesignator']}^{category['CodeValue']}^{category['CodeMeaning']}"
        for entry in category.get("Type", []):
            code = f"{entry['CodingSchemeDesignator']}^{entry['CodeValue']}^{entry['CodeMeaning']}"
            rgb = entry.get("recommendedDisplayRGBValue")
            term = Term(entry["CodeMeaning"], f"{CONTEXT}~{cat}~{code}~^^~{ANATOMY_CONTEXT}~^^~^^",
                        tuple(c / 255.0 for c in rgb) if rgb else None)
            for target in entry.get("PolyCLTargets", [entry["CodeMeaning"]]):
                out[target.lower()] = term
    return out


def termFor(target: str | None) -> Term | None:
    """The Term of a model's target ("liver", "kidney", "spleen", or the label value(s) of one such
    as "5" or "2,3"), or None when the terminology file has no entry for it."""
    if not target:
        return None
    name = str(target).strip().lower()
    if name in _terms():
        return _terms()[name]
    from polycl.io import TARGET_LABELS, parse_label_spec

    try:
        values = tuple(parse_label_spec(name))
    except Exception:  # noqa: BLE001 - not a label spec either: no code
        return None
    return next((_terms().get(n) for n, v in TARGET_LABELS.items() if tuple(v) == values), None)
