"""Resumable batch processing of a folder of CT volumes (``polycl segment DIR -o OUT``).

One output file per case, ``<out>/<case>.nii.gz``, written atomically. A case whose output already
exists is skipped, so a run that was stopped resumes where it left off. One failing case is
reported and does not stop the others. A CSV report (``report.csv``) lists every case's outcome.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from polycl.atomic import atomic_path
from polycl.cases import Case, find_images
from polycl.errors import Cancelled, PolyCLError

#: process(case, output_path) -> short text for the report line (e.g. the segmented volume in ml).
Processor = Callable[[Case, Path], str]


@dataclass
class CaseOutcome:
    case: str
    status: str  # "done", "skipped" or "failed"
    seconds: float
    detail: str
    output: Path


def output_path(out_dir: Path, case: Case, suffix: str = ".nii.gz") -> Path:
    return out_dir / f"{case.name}{suffix}"


def run_batch(input_dir: str | Path, out_dir: str | Path, process: Processor, *, overwrite: bool = False,
              log: Callable[[str], None] = print, cancel: Callable[[], bool] | None = None) -> list[CaseOutcome]:
    """Run ``process`` on every image of ``input_dir``; returns one outcome per case."""
    cases = find_images(input_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[CaseOutcome] = []
    width = len(str(len(cases)))
    for i, case in enumerate(cases, 1):
        if cancel is not None and cancel():
            raise Cancelled(f"batch cancelled after {i - 1} of {len(cases)} cases; finished outputs are kept")
        target = output_path(out, case)
        t0 = time.perf_counter()
        if target.exists() and not overwrite:
            outcome = CaseOutcome(case.name, "skipped", 0.0, "output exists", target)
        else:
            try:
                outcome = CaseOutcome(case.name, "done", 0.0, process(case, target), target)
            except PolyCLError as exc:
                outcome = CaseOutcome(case.name, "failed", 0.0, str(exc).splitlines()[0], target)
            except (RuntimeError, ValueError, MemoryError) as exc:  # keep going on unexpected per-case errors
                outcome = CaseOutcome(case.name, "failed", 0.0, f"{type(exc).__name__}: {exc}", target)
            outcome.seconds = time.perf_counter() - t0
        outcomes.append(outcome)
        log(f"[{i:{width}d}/{len(cases)}] {case.name}: {outcome.status} ({outcome.seconds:.1f} s) {outcome.detail}")
        _write_report(out / "report.csv", outcomes)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    log(f"summary: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed -> {out}")
    return outcomes


def _write_report(path: Path, outcomes: list[CaseOutcome]) -> None:
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "status", "seconds", "detail", "output"])
        for o in outcomes:
            w.writerow([o.case, o.status, f"{o.seconds:.2f}", o.detail, o.output.name])
