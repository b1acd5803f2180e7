"""PolyCL benchmark: fixed inputs from the shared data, per-volume and per-slice times, peak memory.

Usage (from the repository root)::

    .venv/bin/python PolyCLCore/benchmarks/benchmark.py [--stages load,segment,...] [--device cpu|cuda|all]

Each stage is a module ``stages/<name>.py`` exposing ``run(ctx) -> list[Row]``; ``ctx`` gives the
data folder, the device and helpers to time a call. Rows print as a table and, with ``--json``,
as JSON (for the docs: PolyCLCore/docs/benchmarks.md records results with the machine they came from).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: The development data folder beside the repository, unless POLYCL_DATA_DIR names another.
os.environ.setdefault("POLYCL_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Stage modules in run order.
STAGES = ["load", "segment", "encoder", "refine", "propagate", "sam_volume", "pipeline", "train", "batch",
          "interactive", "registration", "clinical"]


@dataclass
class Row:
    stage: str
    case: str
    device: str
    seconds: float  # wall time for the whole volume (or the unit named in ``unit``)
    n_slices: int = 0
    unit: str = "volume"
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def per_slice_ms(self) -> float:
        return 1000 * self.seconds / self.n_slices if self.n_slices else float("nan")


@dataclass
class Context:
    data: Path
    device: str
    repeats: int = 1

    def timed(self, fn, *args, **kwargs):
        """Run ``fn`` ``repeats`` times (after one warm-up when repeats > 1); return (result, best seconds, peak GPU MB)."""
        import torch

        if self.repeats > 1:
            fn(*args, **kwargs)
        best, result = float("inf"), None
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(self.repeats):
            if self.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            if self.device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        gpu = torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else 0.0
        return result, best, gpu


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()} | {platform.processor() or platform.machine()} | {os.cpu_count()} CPU cores | "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads) | {gpu}")


def main(argv=None) -> int:
    from polycl.datasets import data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write rows as JSON here")
    args = parser.parse_args(argv)
    import torch

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("no GPU: running on the CPU only")
        devices = ["cpu"]
    data = data_dir(required=True)
    print(f"machine: {machine()}")
    rows: list[Row] = []
    for device in devices:
        ctx = Context(data=data, device=device, repeats=args.repeats)
        for name in args.stages.split(","):
            stage = importlib.import_module(f"stages.{name.strip()}")
            for row in stage.run(ctx):
                row.peak_rss_mb = row.peak_rss_mb or peak_rss_mb()
                rows.append(row)
                print(f"{row.stage:12s} {row.case:28s} {row.device:5s} {row.seconds:9.3f} s/{row.unit:7s} "
                      f"{row.n_slices:4d} slices {row.per_slice_ms:9.1f} ms/slice  peak RSS {row.peak_rss_mb:7.0f} MB"
                      f"  peak GPU {row.peak_gpu_mb:7.0f} MB  {json.dumps(row.extra) if row.extra else ''}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
