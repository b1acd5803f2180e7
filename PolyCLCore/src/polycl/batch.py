"""Resumable batch processing of a folder of CT volumes (``polycl segment DIR -o OUT``).

One output file per case, ``<out>/<case>.nii.gz``, written atomically. A case whose output already
exists is skipped (unless ``overwrite``), so a run that was stopped resumes where it left off. One
failing case (unreadable, refused, or its output not writable) is reported and does not stop the
others. A CSV report (``report.csv``) lists every case's outcome.

Under ``torchrun`` (see :mod:`polycl.distributed`) each rank takes its share of the sorted case
list (every ``world_size``-th case from its rank: no case on two ranks), writes its progress to
``report.rank<R>.csv`` as it goes, and at the end rank 0 merges every rank's outcomes into one
``report.csv`` (with a ``rank`` column) and removes the per-rank files. A rank that dies leaves only
complete outputs (atomic writes); running the same command again skips them and does the rest.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from polycl.atomic import atomic_path
from polycl.cases import Case, find_images
from polycl.distributed import DistInfo, barrier, gather_objects, shard
from polycl.errors import Cancelled, PolyCLError
from polycl.progress import CancelToken, Progress

#: process(case, output_path) -> short text for the report line (e.g. the segmented volume in ml).
Processor = Callable[[Case, Path], str]


@dataclass
class CaseOutcome:
    case: str
    status: str  # "done", "skipped" or "failed"
    seconds: float
    detail: str
    output: Path
    rank: int = 0


def output_path(out_dir: Path, case: Case, suffix: str = ".nii.gz") -> Path:
    return out_dir / f"{case.name}{suffix}"


def run_batch(input_dir: str | Path, out_dir: str | Path, process: Processor, *, overwrite: bool = False,
              progress: Progress | None = None, cancel: CancelToken | None = None,
              dist: DistInfo | None = None) -> list[CaseOutcome]:
    """Run ``process`` on every image of ``input_dir`` (this rank's share of them under torchrun:
    ``dist`` from :func:`polycl.distributed.setup`); returns one outcome per case of the whole run,
    every rank's, sorted by case name.

    ``progress(cases_done, cases, line)`` after each case, ``line`` being its report line
    (``[ 3/10] case: done (41.2 s) liver 1510.3 ml; ...``), and once more at the end with the
    summary (:func:`summary_line`). ``cancel`` (a :class:`~polycl.progress.CancelToken`) is checked
    between cases: the finished outputs and the report are kept, and a rerun resumes."""
    dist = dist or DistInfo()
    all_cases = find_images(input_dir)
    cases = shard(all_cases, dist)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not dist.enabled:  # (under torchrun another rank may be writing its own right now)
        remove_stale_partials(out)
    report = out / (f"report.rank{dist.rank}.csv" if dist.enabled else "report.csv")
    prefix = f"[rank {dist.rank}] " if dist.enabled else ""
    outcomes: list[CaseOutcome] = []
    width = len(str(len(cases)))
    for i, case in enumerate(cases, 1):
        if cancel is not None:
            cancel.check(f"batch cancelled after {i - 1} of {len(cases)} cases; finished outputs are kept")
        target = output_path(out, case)
        t0 = time.perf_counter()
        if target.exists() and not overwrite:
            outcome = CaseOutcome(case.name, "skipped", 0.0, "output exists", target)
        else:
            try:
                outcome = CaseOutcome(case.name, "done", 0.0, process(case, target), target)
            except Cancelled:  # inside a case: its output is not written (atomic), earlier ones are kept
                raise
            except PolyCLError as exc:
                outcome = CaseOutcome(case.name, "failed", 0.0, str(exc).splitlines()[0], target)
            except OSError as exc:  # this case's output could not be written (disk full, permissions): go on
                outcome = CaseOutcome(case.name, "failed", 0.0, f"cannot write {target.name}: "
                                      f"{exc.strerror or exc}", target)
            except (RuntimeError, ValueError, MemoryError) as exc:  # keep going on unexpected per-case errors
                outcome = CaseOutcome(case.name, "failed", 0.0, f"{type(exc).__name__}: {exc}", target)
            outcome.seconds = time.perf_counter() - t0
        outcome.rank = dist.rank
        outcomes.append(outcome)
        _write_report(report, outcomes)
        if progress is not None:
            progress(i, len(cases), f"{prefix}[{i:{width}d}/{len(cases)}] {case.name}: {outcome.status} "
                                    f"({outcome.seconds:.1f} s) {outcome.detail}")
    if dist.enabled:  # one report for the whole run, written by rank 0 once every rank has finished
        outcomes = sorted((o for part in gather_objects(dist, outcomes) for o in part), key=lambda o: o.case)
        if dist.is_main:
            _write_report(out / "report.csv", outcomes)
            for r in range(dist.world_size):
                (out / f"report.rank{r}.csv").unlink(missing_ok=True)
        barrier(dist)
    if dist.is_main and progress is not None:
        progress(len(cases), len(cases), summary_line(outcomes, out, dist))
    return outcomes


def remove_stale_partials(out: Path) -> list[Path]:
    """Delete the temporary files (``.tmp-*``, :func:`polycl.atomic.atomic_path`) that a run killed while
    writing left in ``out``: never a result, and the rerun writes those cases again."""
    stale = [p for p in out.glob(".tmp-*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def summary_line(outcomes: list[CaseOutcome], out: Path, dist: DistInfo | None = None) -> str:
    """``summary: 4 done, 1 skipped, 0 failed -> OUT`` (the last line of a batch run); when cases were
    skipped, the rule that skipped them."""
    from polycl.outputs import OVERWRITE_RULE

    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    ranks = f" on {dist.world_size} ranks" if dist is not None and dist.enabled else ""
    rule = f" ({OVERWRITE_RULE})" if counts["skipped"] else ""
    return (f"summary: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed{ranks} -> "
            f"{out}{rule}")


def _write_report(path: Path, outcomes: list[CaseOutcome]) -> None:
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "status", "seconds", "detail", "output", "rank"])
        for o in outcomes:
            w.writerow([o.case, o.status, f"{o.seconds:.2f}", o.detail, o.output.name, o.rank])
