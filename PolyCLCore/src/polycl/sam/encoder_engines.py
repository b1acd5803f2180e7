"""SAM image encoders run by CPU inference engines: the same network, about 3x faster on a laptop CPU.

Every SAM flow (refine, chain propagation, the Segment pipeline, interactive prompts) spends its
time in the image encoder: one forward pass per axial slice. LiteMedSAM's TinyViT encoder is
75 GFLOP; eager PyTorch runs it at ~2 s per slice on 2 CPU cores. The field's CPU inference
engines run the exported graph with fused, cache-blocked kernels:

========================  ==============================================================
engine                    what runs
========================  ==============================================================
``torch``                 eager PyTorch (the reference; bf16 autocast on CUDA, see SliceSegmenter)
``openvino``              OpenVINO: ``openvino.convert_model`` of the encoder, saved as IR
                          (``.xml`` + ``.bin``), compiled for the CPU in fp32
``onnxruntime``           ONNX Runtime on an ONNX export (``torch.onnx.export``, opset 17)
``compile``               ``torch.compile`` (inductor); compiles on first call (~90 s on 2 cores)
========================  ==============================================================

``auto`` (the default, or ``$POLYCL_SAM_ENCODER``) picks, on the CPU, the first of openvino,
onnxruntime that is installed, builds and reproduces eager torch's embedding (below); otherwise
eager torch. On CUDA ``auto`` is eager torch (with bf16 autocast). ``auto`` uses an engine only
for LiteMedSAM, the bundled model whose export is tested; the 1024 px ViT models can be asked for
an engine by name. Measured on the project's 2-core machine: ``PolyCLCore/docs/benchmarks.md``.

Same masks
    OpenVINO's CPU plugin computes in bf16 by default on CPUs that have AVX512-BF16 or AMX: that
    changes LiteMedSAM's embedding by ~4 % (relative L2) and so its masks. We compile with
    ``INFERENCE_PRECISION_HINT=f32``, and every engine is checked once when it is built: a fixed
    synthetic image goes through it and through eager torch, and the engine is used only when the
    relative L2 difference of the embeddings is below :data:`MAX_RELATIVE_ERROR` (measured: 4e-6).
    An engine that fails to build, fails that check or raises later falls back to eager torch;
    ``EncoderEngine.fallback_reason`` says why.

Artefacts
    The export is made once and cached in ``<cache>/sam/encoders/`` (:func:`polycl.download.cache_dir`;
    where downloaded SAM weights live; the bundled LiteMedSAM weights sit in a package folder that
    may be read-only), named by the weights' SHA-256 and the version of what made the file
    (OpenVINO's version for IR; torch's version and the opset for ONNX). Written atomically, never
    at import time: the first use of a model on a machine pays ~10 s for it.

Shapes
    Input: (B, 3, S, S) float32, already normalised by ``Sam.preprocess`` (S = 256 for LiteMedSAM,
    1024 for SAM ViT). Output: (B, 256, S/16, S/16) float32 on the input's device. Exports have a
    static batch of 1 (TinyViT's patch merging bakes the traced batch size in); batches are run
    one image at a time, which on a CPU costs nothing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "openvino", "onnxruntime", "compile")
#: Engines ``auto`` tries on the CPU, fastest first (benchmarks.md).
AUTO_CPU_ORDER = ("openvino", "onnxruntime")
#: Largest relative L2 difference from eager torch's embedding for an engine to be used.
MAX_RELATIVE_ERROR = 1e-3
ONNX_OPSET = 17


def requested_engine(engine: str | None = None) -> str:
    """``engine``, else ``$POLYCL_SAM_ENCODER``, else 'auto'; checked against :data:`ENGINES`."""
    from polycl.errors import InputError

    name = (engine or os.environ.get("POLYCL_SAM_ENCODER") or "auto").strip().lower()
    if name not in ENGINES:
        raise InputError(f"unknown SAM encoder engine '{name}' (choose from {', '.join(ENGINES)})")
    return name


@dataclass
class EncoderEngine:
    """A callable image encoder: ``engine(x)`` with x (B, 3, S, S) -> (B, 256, S/16, S/16).

    ``name``: the engine that runs ('torch', 'openvino', ...); ``detail``: its version and settings;
    ``fallback_reason``: why a requested engine is not the one running ('' when it is);
    ``build_seconds``: time spent exporting/compiling and checking.
    """

    name: str
    detail: str
    run: Callable[[torch.Tensor], torch.Tensor]
    reference: Callable[[torch.Tensor], torch.Tensor] | None = None
    fallback_reason: str = ""
    build_seconds: float = 0.0
    relative_error: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.reference is None:  # eager torch: thread-safe as it is
            return self.run(x)
        with self._lock:  # an OpenVINO infer request / ORT run per call is not shared across threads
            try:
                return self.run(x)
            except Exception as exc:  # noqa: BLE001  any engine failure -> eager torch from now on
                log.warning("SAM encoder engine %s failed (%s); using eager torch from now on", self.name, exc)
                self.fallback_reason = f"{self.name} failed at run time: {type(exc).__name__}: {str(exc)[:200]}"
                self.name, self.detail, self.run, self.reference = "torch", "eager (fallback)", self.reference, None
                return self.run(x)

    def describe(self) -> str:
        text = f"{self.name} ({self.detail})"
        return text + (f"; {self.fallback_reason}" if self.fallback_reason else "")


def build_encoder(encoder: torch.nn.Module, *, model_name: str, sha256: str, device: torch.device,
                  engine: str | None = None, auto_allowed: bool = True, cache: Path | None = None,
                  threads: int | None = None) -> EncoderEngine:
    """The image encoder ``encoder`` (eval mode, on ``device``) run by ``engine`` (see module doc).

    ``model_name``/``sha256`` name the cached export; ``auto_allowed`` False makes 'auto' mean
    eager torch (models whose export is not tested); ``threads`` defaults to torch's thread count.
    """
    requested = requested_engine(engine)
    eager = _eager(encoder)
    if requested == "torch":
        return eager
    if requested == "auto":
        if device.type != "cpu" or not auto_allowed:
            return eager
        candidates = AUTO_CPU_ORDER
    else:
        candidates = (requested,)
    if requested in ("openvino", "onnxruntime") and device.type != "cpu":
        eager.fallback_reason = f"{requested} runs on the CPU only; the model is on {device}"
        return eager
    reasons = []
    for name in candidates:
        t0 = time.perf_counter()
        try:
            built = _BUILDERS[name](encoder, model_name=model_name, sha256=sha256, cache=cache,
                                    threads=threads or torch.get_num_threads())
            err = _check_against_eager(built, eager, encoder)
        except ImportError as exc:
            reasons.append(f"{name}: not installed ({exc.name or exc})")
            continue
        except Exception as exc:  # noqa: BLE001  export or compile failure
            reasons.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if err > MAX_RELATIVE_ERROR:
            reasons.append(f"{name}: embedding differs from eager torch by {err:.2g} (> {MAX_RELATIVE_ERROR:g})")
            continue
        built.reference, built.relative_error = eager.run, err
        built.build_seconds = time.perf_counter() - t0
        built.fallback_reason = "; ".join(reasons)
        log.info("SAM encoder: %s (built and checked in %.1f s, relative error %.1e)", built.describe(),
                 built.build_seconds, err)
        return built
    eager.fallback_reason = "; ".join(reasons)
    if requested != "auto" or reasons:
        log.warning("SAM encoder engine unavailable, using eager torch: %s", eager.fallback_reason)
    return eager


def _eager(encoder: torch.nn.Module) -> EncoderEngine:
    def run(x):
        with torch.inference_mode():
            return encoder(x)

    return EncoderEngine("torch", "eager", run)


def check_image(size: int) -> torch.Tensor:
    """A fixed (1, 3, size, size) input like a normalised CT slice: a smooth body-like blob with
    edges and texture (deterministic, so checks are reproducible)."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    body = ((xx / 0.8) ** 2 + (yy / 0.6) ** 2 < 1).float() * 0.5
    organ = (((xx + 0.3) / 0.3) ** 2 + ((yy + 0.1) / 0.25) ** 2 < 1).float() * 0.3
    img = (body + organ + 0.05 * torch.rand(size, size, generator=g)).clamp(0, 1)
    return img.expand(1, 3, size, size).contiguous()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (L2 over all elements)."""
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def _check_against_eager(built: EncoderEngine, eager: EncoderEngine, encoder: torch.nn.Module) -> float:
    x = check_image(int(encoder.img_size)).to(next(encoder.parameters()).device)
    return relative_error(built.run(x), eager.run(x))


# -- cached artefacts ------------------------------------------------------------------------------
def artefact_dir(cache: Path | None = None) -> Path:
    """Where exports live: ``cache`` or ``<polycl cache>/sam/encoders``."""
    if cache is not None:
        return Path(cache)
    from polycl.download import cache_dir

    return cache_dir("sam") / "encoders"


def artefact_stem(model_name: str, sha256: str, maker: str) -> str:
    """File stem of an export: model, first 16 hex digits of the weights' SHA-256, what made it."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model_name}-{sha256[:16]}-{maker}")


def _publish(tmpdir: Path, files: list[str], dest: Path) -> None:
    """Move finished files from ``tmpdir`` into ``dest``; the last one listed marks completeness."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        os.replace(tmpdir / name, dest / name)


def _export_once(dest: Path, files: list[str], write: Callable[[Path], None]) -> None:
    """Run ``write(tmpdir)`` to create ``files`` unless ``dest/files[-1]`` exists; publish atomically."""
    if (dest / files[-1]).is_file():
        return
    dest.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".export-", dir=dest))
    try:
        write(tmpdir)
        _publish(tmpdir, files, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _example(encoder: torch.nn.Module) -> torch.Tensor:
    return torch.zeros(1, 3, int(encoder.img_size), int(encoder.img_size))


def _one_at_a_time(run_one: Callable, out_device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Static-batch-1 engines: run each image of (B, 3, S, S) alone and stack the results."""
    def run(x: torch.Tensor) -> torch.Tensor:
        outs = [torch.from_numpy(run_one(x[i:i + 1].detach().to("cpu", torch.float32).contiguous().numpy()))
                for i in range(x.shape[0])]
        return torch.cat(outs, 0).to(out_device)

    return run


def _build_openvino(encoder, *, model_name, sha256, cache, threads) -> EncoderEngine:
    import openvino as ov

    version = ov.get_version().split("-")[0]
    stem = artefact_stem(model_name, sha256, f"openvino{version}")
    dest = artefact_dir(cache)

    def write(tmp: Path) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow in TinyViT
            model = ov.convert_model(encoder, example_input=_example(encoder))
        ov.save_model(model, tmp / f"{stem}.xml", compress_to_fp16=False)  # default would halve the weights

    _export_once(dest, [f"{stem}.bin", f"{stem}.xml"], write)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(dest / f"{stem}.xml"), "CPU",
                                  {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads),
                                   "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run_one(a):
        return request.infer({0: a})[0].copy()

    return EncoderEngine("openvino", f"OpenVINO {version}, fp32, {threads} threads, {dest / stem}.xml",
                         _one_at_a_time(run_one, torch.device("cpu")))


def _build_onnxruntime(encoder, *, model_name, sha256, cache, threads) -> EncoderEngine:
    import onnxruntime as ort

    stem = artefact_stem(model_name, sha256, f"onnx-torch{torch.__version__.split('+')[0]}-opset{ONNX_OPSET}")
    dest = artefact_dir(cache)

    def write(tmp: Path) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(encoder, (_example(encoder),), str(tmp / f"{stem}.onnx"), input_names=["image"],
                              output_names=["embedding"], opset_version=ONNX_OPSET, dynamo=False)

    _export_once(dest, [f"{stem}.onnx"], write)
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(dest / f"{stem}.onnx"), so, providers=["CPUExecutionProvider"])

    def run_one(a):
        return session.run(None, {"image": a})[0]

    return EncoderEngine("onnxruntime", f"ONNX Runtime {ort.__version__}, {threads} threads, {dest / stem}.onnx",
                         _one_at_a_time(run_one, torch.device("cpu")))


def _build_compile(encoder, *, model_name, sha256, cache, threads) -> EncoderEngine:
    compiled = torch.compile(encoder, dynamic=False)

    def run(x):
        with torch.inference_mode():
            return compiled(x)

    return EncoderEngine("compile", f"torch.compile (inductor), torch {torch.__version__}", run)


_BUILDERS = {"openvino": _build_openvino, "onnxruntime": _build_onnxruntime, "compile": _build_compile}
