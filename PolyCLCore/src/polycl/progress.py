"""One progress and cancel protocol for every long operation in polycl.

Every long function (U-Net inference, SAM refinement, propagation, the Segment pipeline,
fine-tuning, pre-training, batch runs, downloads) takes the same two keyword arguments:

* ``progress(done, total, message)``: called as the work advances. ``done`` of ``total`` units
  (slices, steps, cases, bytes, or a fraction of 1.0 for multi-stage work), ``total <= 0`` when the
  total is unknown, and one short line a person can read. Its return value is ignored.
* ``cancel``: a :class:`CancelToken`. Any thread (a Cancel button, a signal handler, a web request)
  calls :meth:`CancelToken.cancel`; the work checks the token at its safe points and raises
  :class:`~polycl.errors.Cancelled`. A cancelled run returns nothing and writes nothing it would
  not also leave after a crash (each function's docstring says what it keeps for resuming).

Inside a function, :class:`Reporter` holds both: ``report(done, total, message)`` checks the token,
then forwards; ``report.span(a, b)`` is the reporter of a stage that fills the fraction ``a..b`` of
the bar (the Segment pipeline: U-Net then SAM).

Front ends adapt ``progress`` once: :func:`terminal` (a tqdm bar, the command line),
:func:`json_lines` (one JSON object per call on stdout: the transport between a ``polycl``
subprocess and the Slicer module, which parses it in ``PolyCLSegmentLib.jobs.process``), and the
Slicer module's worker ``Job`` (a progress bar polled by a timer).
"""

from __future__ import annotations

import json
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from polycl.errors import Cancelled

#: progress(done, total, message) -> None
Progress = Callable[[float, float, str], None]


class CancelToken:
    """A thread-safe cancel flag: :meth:`cancel` from anywhere, :meth:`check` in the work."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self, message: str = "cancelled; nothing was changed") -> None:
        """Raise :class:`~polycl.errors.Cancelled` (with ``message``) when cancel was asked for."""
        if self._event.is_set():
            raise Cancelled(message)


class Reporter:
    """``progress`` and ``cancel`` of one run, in one object.

    ``report(done, total, message)`` first checks the token (raising ``Cancelled`` with
    ``cancelled_message``), then calls ``progress``: with ``done``/``total`` unchanged at the top
    level, or mapped onto this reporter's fraction of the parent's bar for a :meth:`span`.
    """

    def __init__(self, progress: Progress | None = None, cancel: CancelToken | None = None, *,
                 cancelled_message: str = "cancelled; nothing was changed",
                 _range: tuple[float, float] | None = None) -> None:
        if cancel is not None and not isinstance(cancel, CancelToken):
            raise TypeError(f"cancel must be a polycl.progress.CancelToken, not {type(cancel).__name__}")
        self.progress, self.cancel, self.cancelled_message, self._range = progress, cancel, cancelled_message, _range

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.cancelled

    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.check(self.cancelled_message)

    def __call__(self, done: float, total: float, message: str = "") -> None:
        self.check()
        if self.progress is None:
            return
        if self._range is None:
            self.progress(done, total, message)
            return
        a, b = self._range
        fraction = min(max(float(done) / float(total), 0.0), 1.0) if total > 0 else 0.0
        self.progress(a + (b - a) * fraction, 1.0, message)

    def span(self, start: float, stop: float, cancelled_message: str | None = None) -> "Reporter":
        """The reporter of a stage filling ``start..stop`` (fractions of this reporter's bar)."""
        a, b = self._range or (0.0, 1.0)
        return Reporter(self.progress, self.cancel, cancelled_message=cancelled_message or self.cancelled_message,
                        _range=(a + (b - a) * start, a + (b - a) * stop))


@contextmanager
def terminal(desc: str, unit: str = "it", *, percent: bool = False, disable: bool = False) -> Iterator[Progress]:
    """A tqdm bar on stderr as a :data:`Progress` (``percent``: show a fraction as 0..100 %). The bar
    appears at the first report, so work that reports nothing (a bundled file: no download) shows none."""
    from tqdm.auto import tqdm

    bar = None

    def progress(done: float, total: float, message: str = "") -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=100 if percent else None, desc=desc, unit="%" if percent else unit, disable=disable,
                       leave=False, unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000)
        if percent:
            bar.n = round(100 * done / total) if total > 0 else 0
        else:
            if total > 0 and bar.total != total:
                bar.total = total
            bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def json_lines(stream=None) -> Progress:
    """A :data:`Progress` that prints ``{"event": "progress", "done", "total", "message"}`` lines."""
    def progress(done: float, total: float, message: str = "") -> None:
        out = stream or sys.stdout
        out.write(json.dumps({"event": "progress", "done": done, "total": total, "message": message}) + "\n")
        out.flush()

    return progress
