"""One long operation at a time for a front end (the Slicer panel, a web page), without Qt.

A :class:`JobInput` (inputs read from MRML on the GUI thread) goes to a computation that returns an
:class:`Outcome` (the finished mask and its provenance), which the Logic writes on the GUI thread.

Interactive computations (Segment, Refine, Propagate) run on the persistent worker thread
(:mod:`PolyCLSegmentLib.jobs.thread`), fine-tuning and batch runs in a ``polycl`` subprocess
(:mod:`PolyCLSegmentLib.jobs.process`). The front end calls :meth:`JobRunner.poll` from its timer on
the GUI thread; that is where a finished result is written to MRML (``apply``) and where the
front end's ``onDone`` runs, so nothing MRML or Qt is ever touched from another thread.

    runner = JobRunner()
    runner.start("segment", logic.computeSegment, request, apply=logic.applyOutcome, onDone=select)
    ...                               # timer: update = runner.poll(); bar.value = 100 * update.fraction
    runner.cancel()                   # the Cancel button: the job's token, or the process tree
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class JobInput:
    """Everything a computation needs, read from MRML on the GUI thread (no MRML inside).

    ``options``: the operation's typed polycl options (SegmentOptions, RefineOptions or
    PropagateOptions); ``mask``: the coarse mask (refine) or the annotated seed (propagate), uint8
    (z, y, x) on the volume's grid; ``boxes``: drawn boxes [(k, x0, y0, x1, y1)] in array indices."""

    operation: str
    volume: Any  # polycl.volume.Volume (copied voxels, LPS geometry)
    volumeNodeId: str
    segmentationNodeId: str | None
    segmentId: str | None  # segment to replace (None: new segment)
    options: Any
    segmentName: str | None = None
    overwriteOthers: bool = False
    model: str | None = None
    mask: np.ndarray | None = None
    boxes: list | None = None
    sliceIndex: int | None = None
    predictor: Any = None
    promptNote: str = ""


@dataclass
class Outcome:
    """A finished computation, ready to be written on the GUI thread by ``applyOutcome``."""

    request: JobInput
    mask: np.ndarray
    segmentName: str
    provenance: dict
    color: tuple | None = None
    message: str = ""  # one line for the user (e.g. which objects were propagated)
    terminology: str | None = None  # Slicer terminology string (SNOMED CT) of a new segment


@dataclass
class Update:
    """What :meth:`JobRunner.poll` tells the front end. ``value``: what ``apply`` returned (a
    segment ID) or the finished :class:`~PolyCLSegmentLib.jobs.process.CoreProcess`."""

    name: str
    fraction: float
    message: str
    finished: bool = False
    cancelled: bool = False
    error: str | None = None  # one line for a message box
    detail: str = ""          # the whole story (traceback, the process's last lines)
    value: Any = None


class JobRunner:
    """Runs one job or subprocess at a time and reports on it when polled."""

    def __init__(self) -> None:
        self._worker = None
        self._job = None
        self._process = None
        self._name = ""
        self._apply: Callable | None = None
        self._onDone: Callable | None = None

    @property
    def busy(self) -> bool:
        return self._job is not None or self._process is not None

    def start(self, name: str, compute: Callable, request, *, apply: Callable, onDone: Callable | None = None) -> None:
        """Run ``compute(request, progress, cancel)`` on the worker thread; when it has finished,
        :meth:`poll` calls ``apply(outcome)`` then ``onDone(value)`` on the caller's thread."""
        self._claim(name, onDone)
        self._apply = apply
        self._job = self.background(lambda job: compute(request, job.progress, job.token), name=name)

    def background(self, fn: Callable, name: str = "background"):
        """Queue ``fn(job)`` on the worker thread without claiming the runner (prefetching embeddings):
        returns its :class:`~PolyCLSegmentLib.jobs.thread.Job` (``cancel()``); nothing is applied to MRML."""
        if self._worker is None:
            from PolyCLSegmentLib.jobs.thread import Worker

            self._worker = Worker()
        return self._worker.submit(fn, name=name)

    def startProcess(self, name: str, process, *, onDone: Callable | None = None) -> None:
        """Follow a started :class:`~PolyCLSegmentLib.jobs.process.CoreProcess` (fine-tuning, batch)."""
        self._claim(name, onDone)
        self._process = process

    def _claim(self, name: str, onDone) -> None:
        if self.busy:
            raise RuntimeError(f"'{self._name}' is still running; cancel it first")
        self._name, self._onDone = name, onDone

    def cancel(self) -> None:
        """Cancel the job (its token: the work stops at its next check and changes nothing) or the
        process tree (SIGINT first: fine-tuning keeps its resumable state), without blocking."""
        if self._job is not None:
            self._job.cancel()
        if self._process is not None:
            threading.Thread(target=self._process.cancel, daemon=True).start()

    def poll(self) -> Update | None:
        """Progress of the running operation (None when idle); once, an Update with ``finished``."""
        if self._job is not None:
            return self._pollJob()
        if self._process is not None:
            return self._pollProcess()
        return None

    def _pollJob(self) -> Update:
        job = self._job
        update = Update(self._name, job.fraction, job.message)
        if not job.done.is_set():
            return update
        self._job = None
        update.finished, update.cancelled = True, job.cancelled
        if job.cancelled:
            update.message = "cancelled; nothing was changed"
        elif job.error:
            update.error, update.detail = job.error.splitlines()[0], job.error
        else:
            try:
                update.value = self._apply(job.result)
                update.message = getattr(job.result, "message", "") or update.message
            except Exception as exc:  # noqa: BLE001 - e.g. the volume was removed while computing
                update.error, update.detail = str(exc), str(exc)
        return self._finish(update)

    def _pollProcess(self) -> Update:
        proc = self._process
        for line in proc.poll():
            logging.info("polycl: %s", line)
        update = Update(self._name, proc.fraction, proc.message)
        if proc.running:
            return update
        self._process = None
        update.finished, update.cancelled, update.value = True, proc.cancelled, proc
        if proc.cancelled:
            update.message = "stopped; finished outputs and the resumable training state are kept"
        elif proc.returncode not in (0, None):
            update.error = f"{self._name} failed: {proc.lastError()}"
            update.detail = "\n".join(proc.lines[-40:])
        return self._finish(update)

    def _finish(self, update: Update) -> Update:
        onDone, self._onDone = self._onDone, None
        if onDone is not None and not update.cancelled and update.error is None:
            onDone(update.value)
        return update

    def shutdown(self) -> None:
        if self._process is not None:
            self._process.cancel(grace=5)
        if self._worker is not None:
            self._worker.shutdown(timeout=2)
