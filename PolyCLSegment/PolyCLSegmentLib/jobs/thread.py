"""One persistent background thread for interactive torch work (Segment, Refine, Propagate).

Rules that keep Slicer responsive and safe:

* the thread runs only pure computations (numpy/torch on copies of the voxels); every MRML read
  and write happens on the GUI thread, before and after (see ``PolyCLSegmentLogic``);
* the GUI polls :class:`Job` (a ``qt.QTimer`` in the Widget) for progress, result or error; no
  callback from this thread ever touches Qt or MRML;
* one thread, reused, so a loaded model stays warm and torch's thread pool is created once;
* a crash or out-of-memory error inside a job becomes ``job.error`` (a message), never an
  exception in Slicer's event loop.
"""

from __future__ import annotations

import queue
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Job:
    """A submitted computation: ``fn(job)`` passes ``job.progress`` and ``job.token`` to polycl
    (:mod:`polycl.progress`: ``progress(done, total, message)`` and a cancel token, which makes the
    work raise ``Cancelled`` at its next check)."""

    fn: Callable[["Job"], Any]
    name: str = "job"
    done: threading.Event = field(default_factory=threading.Event)
    token: Any = field(default_factory=lambda: _cancelToken())  # polycl imported on first job, not at import
    result: Any = None
    error: str | None = None
    cancelled: bool = False
    fraction: float = 0.0
    message: str = ""

    def progress(self, done: float, total: float = 1.0, message: str = "") -> None:
        """Record progress (read by the GUI's timer)."""
        self.fraction = min(max(float(done) / float(total), 0.0), 1.0) if total and total > 0 else 0.0
        if message:
            self.message = message

    def cancel(self) -> None:
        self.token.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


def _cancelToken():
    from polycl.progress import CancelToken

    return CancelToken()


class Worker:
    """A single daemon thread executing :class:`Job` s in submission order."""

    def __init__(self, name: str = "PolyCLWorker"):
        self._queue: "queue.Queue[Job | None]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.current: Job | None = None

    def submit(self, fn: Callable[[Job], Any], name: str = "job") -> Job:
        job = Job(fn, name)
        self._queue.put(job)
        return job

    def shutdown(self, timeout: float = 5.0) -> None:
        if self.current is not None:
            self.current.cancel()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self.current = job
            try:
                job.token.check()  # cancelled before it started
                job.result = job.fn(job)
            except BaseException as exc:  # noqa: BLE001 - report everything, never kill the thread
                from polycl.errors import Cancelled

                from_polycl = type(exc).__module__.startswith("polycl")
                if isinstance(exc, Cancelled):
                    job.cancelled = True
                    job.error = "cancelled"
                elif isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
                    job.error = ("out of memory: " + str(exc).splitlines()[0] if str(exc) else "out of memory") + \
                        " - try the CPU device, a smaller volume, or close other programs"
                elif from_polycl:
                    job.error = str(exc)
                else:
                    job.error = f"{type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=8)
            finally:
                self.current = None
                job.done.set()
