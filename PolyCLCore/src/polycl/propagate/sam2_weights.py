"""SAM 2.1 checkpoints: official addresses, config names, the local cache, building the predictor.

The four SAM 2.1 checkpoints released by Meta on 2024-09-28 (Apache-2.0) are registered with their
official download address and the config of the ``sam2`` package (1.1.0) that matches each one.
Weights are downloaded on request into ``polycl.download.cache_dir("sam2")`` (``~/.polycl/cache/sam2``,
or ``$POLYCL_CACHE/sam2``) with polycl's downloader (progress, resume, SHA-256); nothing is
downloaded during tests or implicitly.

SHA-256: the official release publishes no checksums, and none could be verified on the machines
this was written on (no access to the files). The registry therefore holds ``sha256=None`` for all
four; on first download the file's SHA-256 is recorded beside it (``<file>.sha256``) and checked on
every later load, so a file that changes in the cache is refused. Fill the values in once verified.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from polycl.errors import ChecksumError, InputError

BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"


@dataclass(frozen=True)
class Sam2Spec:
    """One registered SAM 2.1 checkpoint."""

    name: str  # e.g. "sam2.1_hiera_tiny"
    config: str  # config name inside the sam2 package
    filename: str
    size_mb: int  # approximate download size
    sha256: str | None = None  # None: not verified yet (see module docstring)

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.filename}"


SAM2_CHECKPOINTS: dict[str, Sam2Spec] = {
    s.name: s
    for s in (
        Sam2Spec("sam2.1_hiera_tiny", "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt", 149),
        Sam2Spec("sam2.1_hiera_small", "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt", 176),
        Sam2Spec("sam2.1_hiera_base_plus", "configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt", 309),
        Sam2Spec("sam2.1_hiera_large", "configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt", 857),
    )
}
#: Short names accepted everywhere a checkpoint name is.
ALIASES = {"tiny": "sam2.1_hiera_tiny", "small": "sam2.1_hiera_small", "base_plus": "sam2.1_hiera_base_plus",
           "base+": "sam2.1_hiera_base_plus", "large": "sam2.1_hiera_large"}
DEFAULT_SAM2 = "sam2.1_hiera_tiny"
#: When no checkpoint is named, the first of these found in the cache is used.
PREFERENCE = ("sam2.1_hiera_large", "sam2.1_hiera_base_plus", "sam2.1_hiera_small", "sam2.1_hiera_tiny")


def sam2_cache_dir() -> Path:
    from polycl.download import cache_dir

    return cache_dir("sam2")


@dataclass(frozen=True)
class Sam2Checkpoint:
    """A resolved checkpoint: ``path`` may not exist yet (``present`` says)."""

    name: str
    config: str
    path: Path
    spec: Sam2Spec | None  # None for a user file given by path

    @property
    def present(self) -> bool:
        return self.path.is_file()


def spec_for(name: str) -> Sam2Spec:
    key = ALIASES.get(name.lower(), name)
    key = key[:-3] if key.endswith(".pt") else key
    if key not in SAM2_CHECKPOINTS:
        raise InputError(f"unknown SAM 2 checkpoint '{name}'; known: {', '.join(SAM2_CHECKPOINTS)} "
                         f"(or {', '.join(ALIASES)}), or give a path to a .pt file")
    return SAM2_CHECKPOINTS[key]


def _config_for_file(path: Path) -> str:
    stem = path.name.lower()
    for spec in SAM2_CHECKPOINTS.values():
        if spec.filename.lower() == stem:
            return spec.config
    for short, letter in (("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l")):
        if short in stem:
            return f"configs/sam2.1/sam2.1_hiera_{letter}.yaml"
    raise InputError(f"{path}: cannot tell which SAM 2.1 model this file is (its name should contain "
                     "tiny, small, base_plus or large)")


def resolve_sam2(name_or_path: str | os.PathLike | None = None) -> Sam2Checkpoint:
    """A registered name / alias (cache path) or a path to a ``.pt`` file. ``None``: the preferred
    checkpoint already in the cache, else the default (tiny, not yet downloaded)."""
    if name_or_path is None:
        for name in PREFERENCE:
            ck = resolve_sam2(name)
            if ck.present:
                return ck
        return resolve_sam2(DEFAULT_SAM2)
    text = str(name_or_path)
    key = ALIASES.get(text.lower(), text)
    if key in SAM2_CHECKPOINTS:
        spec = SAM2_CHECKPOINTS[key]
        return Sam2Checkpoint(spec.name, spec.config, sam2_cache_dir() / spec.filename, spec)
    p = Path(text).expanduser()
    if p.suffix == ".pt" or p.exists():
        if not p.is_file():
            raise InputError(f"SAM 2 checkpoint {p}: no such file")
        return Sam2Checkpoint(p.stem, _config_for_file(p), p, None)
    spec_for(text)  # raises the helpful "unknown" message
    raise AssertionError("unreachable")


def _recorded_sha(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify_cached(ck: Sam2Checkpoint) -> None:
    """Check the registered SHA-256, or the one recorded at download time (trust on first use)."""
    from polycl.checkpoint import sha256_file, verify_sha256

    if ck.spec is not None and ck.spec.sha256:
        verify_sha256(ck.path, ck.spec.sha256)
        return
    rec = _recorded_sha(ck.path)
    if rec.is_file():
        expected = rec.read_text().split()[0]
        actual = sha256_file(ck.path)
        if actual != expected:
            raise ChecksumError(f"{ck.path}: SHA-256 {actual} differs from the one recorded when it was "
                                f"downloaded ({expected}); delete the file to download it again")


def ensure_sam2(name_or_path: str | os.PathLike | None = None, *, download: bool = True,
                progress=None, cancel=None) -> Sam2Checkpoint:
    """Resolve a checkpoint and make sure its file is there: downloaded (with ``polycl.download``;
    ``progress``/``cancel`` as in :mod:`polycl.progress`) when ``download`` is true, else a clear
    :class:`InputError` telling how to get it."""
    ck = resolve_sam2(name_or_path)
    if ck.present:
        verify_cached(ck)
        return ck
    if ck.spec is None or not download:
        raise InputError(
            f"SAM 2 weights '{ck.name}' are not in {ck.path.parent}. Download them with "
            f"`polycl propagate ... --sam2 {ck.name} --download` (from {ck.spec.url if ck.spec else 'the SAM 2 site'}, "
            f"{ck.spec.size_mb if ck.spec else '?'} MB), or use the offline engine (--engine chain)")
    from polycl import download as dl  # written by the SAM refinement work; imported only when needed

    from polycl.checkpoint import sha256_file

    dl.download(ck.spec.url, sha256=ck.spec.sha256, filename=ck.spec.filename, dest_dir=ck.path.parent,
                progress=progress, cancel=cancel)
    if not ck.spec.sha256:
        _recorded_sha(ck.path).write_text(f"{sha256_file(ck.path)}  {ck.path.name}\n")
    return ck


def build_predictor(checkpoint: Sam2Checkpoint | str | os.PathLike | None = None, *, device="cpu",
                    random_weights: bool = False, config: str | None = None, image_size: int | None = None,
                    compile: bool | None = None):
    """Build ``sam2``'s ``SAM2VideoPredictor`` on ``device``.

    ``checkpoint``: a resolved checkpoint, a registered name or a path (its SHA-256 is checked).
    ``random_weights=True`` builds the real architecture of ``config`` (default hiera-tiny) with
    random weights: for tests and timing only, its masks mean nothing. ``image_size`` overrides the
    model's square input (1024 for every official checkpoint; smaller sizes only make tests faster).
    ``compile`` (default ``$POLYCL_SAM2_COMPILE`` = 1): sam2's own ``vos_optimized`` predictor, whose
    image encoder, memory encoder and attention are ``torch.compile``d on first use - for a CUDA GPU
    (several minutes of compiling, then faster frames); it has not run on a GPU in this project.
    """
    import pickle

    from sam2.build_sam import build_sam2_video_predictor

    if compile is None:
        compile = os.environ.get("POLYCL_SAM2_COMPILE", "") == "1"
    overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
    build = functools.partial(build_sam2_video_predictor, device=str(device), hydra_overrides_extra=overrides,
                              vos_optimized=bool(compile))
    if random_weights:
        cfg = config or SAM2_CHECKPOINTS[DEFAULT_SAM2].config
        return _finish(build(cfg, None))
    ck = checkpoint if isinstance(checkpoint, Sam2Checkpoint) else resolve_sam2(checkpoint)
    if not ck.present:
        ensure_sam2(ck.path if ck.spec is None else ck.name, download=False)
    verify_cached(ck)
    try:
        return _finish(build(config or ck.config, str(ck.path)), ck.name)
    except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise InputError(f"{ck.path}: not a usable SAM 2.1 checkpoint for {config or ck.config} ({exc})") from None


def _finish(predictor, label: str = "random weights"):
    """Skip sam2's hole filling when its CUDA extension is missing (it would warn on every frame and
    fall back to no filling anyway), and label the predictor for reports."""
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        predictor.fill_hole_area = 0
    predictor.polycl_label = label
    return predictor
