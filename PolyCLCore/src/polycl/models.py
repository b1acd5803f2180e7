"""The model registry: named, documented segmentation models and encoders.

Two sources, listed together by :func:`list_models` (``polycl models`` adds the atlas-based targets
through :mod:`polycl.catalogue`):

* bundled models, shipped inside the package: ``polycl/data/models/registry.json`` + weight files
  + a model card (``<name>.md``) each;
* the user's own models under ``$POLYCL_HOME/models/<name>/`` (``model.pt`` + ``model.json``),
  written by ``polycl finetune`` / ``polycl pretrain``. ``POLYCL_HOME`` defaults to ``~/.polycl``.

A model is used by name or by a path to a checkpoint. Registered SHA-256 values are checked
before a bundled file is loaded.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from polycl.atomic import atomic_path, write_text_atomic
from polycl.errors import InputError
from polycl.home import polycl_home

DEFAULT_MODEL = "polycl-liver"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

@dataclass
class ModelEntry:
    """One registered model. ``path`` is where its weights are (or will be) on disk."""

    name: str
    path: Path
    kind: str = "segmentation"  # or "encoder"
    target: str = ""
    sha256: str | None = None
    description: str = ""
    licence: str = ""
    training_data: str = ""
    scores: dict = field(default_factory=dict)
    card: Path | None = None
    source: str = "bundled"  # "bundled", "user" or "path"

    def scores_text(self) -> str:
        return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in self.scores.items())

    def summary(self, width: int = 24) -> str:
        """One row of ``polycl models`` (``width``: of the name column)."""
        return f"{self.name:{width}s} {self.kind:12s} {self.target:13s} {self.source:7s} {self.scores_text()}"

    def describe(self) -> str:
        """Several lines for a person (the Slicer model list's hover text): what, target, scores, data."""
        text = (f"{self.name} ({self.source}): {self.description or self.kind + ' model'}\n"
                f"target: {self.target or '?'}\nscores: {self.scores_text() or 'none recorded'}")
        return text + (f"\ntrained on: {self.training_data}" if self.training_data else "")

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["card"] = str(self.card) if self.card else None
        return d

def user_models_dir() -> Path:
    return polycl_home() / "models"

def bundled_dir() -> Path:
    return Path(str(resources.files("polycl") / "data" / "models"))

def _bundled() -> list[ModelEntry]:
    registry = bundled_dir() / "registry.json"
    if not registry.is_file():
        return []
    entries = []
    for item in json.loads(registry.read_text())["models"]:
        card = bundled_dir() / item["card"] if item.get("card") else None
        entries.append(ModelEntry(
            name=item["name"], path=bundled_dir() / item["file"], kind=item.get("kind", "segmentation"),
            target=item.get("target", ""), sha256=item.get("sha256"), description=item.get("description", ""),
            licence=item.get("licence", ""), training_data=item.get("training_data", ""),
            scores=item.get("scores", {}), card=card, source="bundled"))
    return entries

def _user() -> list[ModelEntry]:
    root = user_models_dir()
    entries = []
    if root.is_dir():
        for meta in sorted(root.glob("*/model.json")):
            try:
                item = json.loads(meta.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a half-written entry is ignored rather than breaking the list
            weights = meta.parent / item.get("file", "model.pt")
            if not weights.is_file():
                continue
            card = meta.parent / "card.md"
            entries.append(ModelEntry(
                name=item.get("name", meta.parent.name), path=weights, kind=item.get("kind", "segmentation"),
                target=item.get("target", ""), sha256=item.get("sha256"), description=item.get("description", ""),
                licence=item.get("licence", ""), training_data=item.get("training_data", ""),
                scores=item.get("scores", {}), card=card if card.is_file() else None, source="user"))
    return entries

def list_models(kind: str | None = None) -> list[ModelEntry]:
    """Bundled then user models (a user model may not shadow a bundled name). The atlas-based targets
    are listed beside them by :func:`polycl.catalogue.list_targets`."""
    bundled = _bundled()
    names = {e.name for e in bundled}
    models = bundled + [e for e in _user() if e.name not in names]
    return [m for m in models if kind is None or m.kind == kind]

def resolve_model(name_or_path: str | os.PathLike | None = None, *, kind: str = "segmentation") -> ModelEntry:
    """Find a model by registry name, or wrap a checkpoint path. ``None`` gives the default model."""
    key = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    for entry in list_models():
        if entry.name == key:
            if entry.kind != kind:
                raise InputError(f"model '{key}' is of kind '{entry.kind}', not '{kind}'")
            if not entry.path.is_file():
                raise InputError(f"model '{key}': weight file {entry.path} is missing; reinstall polycl-core")
            return entry
    p = Path(key).expanduser()
    if p.is_file():
        return ModelEntry(name=p.stem, path=p, kind=kind, source="path")
    known = ", ".join(e.name for e in list_models(kind)) or "none"
    raise InputError(f"no model named '{key}' and no such file; known {kind} models: {known}")

def check_model_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(f"model name '{name}' must be 1-64 letters, digits, '.', '_' or '-'")
    if any(e.name == name for e in _bundled()):
        raise InputError(f"'{name}' is the name of a bundled model; choose another")
    return name

def install_user_model(model_dir: str | os.PathLike, name: str) -> ModelEntry:
    """Copy a finished model folder (``model.pt`` + ``model.json`` + optional card and curve) into
    ``$POLYCL_HOME/models/<name>/`` so it can be used by name. Files are copied, then renamed."""
    import shutil

    check_model_name(name)
    src = Path(model_dir)
    meta_path = src / "model.json"
    if not (src / "model.pt").is_file() or not meta_path.is_file():
        raise InputError(f"{src}: not a finished model folder (needs model.pt and model.json)")
    dest = user_models_dir() / name
    dest.mkdir(parents=True, exist_ok=True)
    for fname in ("model.pt", "training_curve.png", "card.md", "history.json"):
        if (src / fname).is_file():
            with atomic_path(dest / fname) as tmp:
                shutil.copyfile(src / fname, tmp)
    meta = json.loads(meta_path.read_text())
    meta["name"] = name
    write_text_atomic(dest / "model.json", json.dumps(meta, indent=2))
    return resolve_model(name)
