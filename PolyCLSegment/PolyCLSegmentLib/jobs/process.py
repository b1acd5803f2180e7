"""Long jobs (fine-tuning, batch) in a separate Python process, with progress and cancel.

The process is ``PythonSlicer -m polycl.cli.main ...`` inside Slicer (``sys.executable`` outside),
so a crash, an out-of-memory kill or a hung CUDA driver cannot take Slicer down. Its stdout is
read by a thread into a queue; the GUI calls :meth:`CoreProcess.poll` from a timer. The command
runs with ``--progress-json``: its progress (:mod:`polycl.progress`, ``progress(done, total,
message)``) arrives as JSON lines ``{"event": "progress", "done", "total", "message"}`` and sets
``fraction`` and ``message``. Cancel sends SIGINT first (fine-tuning saves a resumable state on
it), then terminates.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def pythonExecutable() -> str:
    """The Python that runs polycl: Slicer's ``PythonSlicer`` when present, else this interpreter."""
    exe = Path(sys.executable)
    for name in ("PythonSlicer", "PythonSlicer.exe"):
        candidate = exe.with_name(name)
        if candidate.is_file():
            return str(candidate)
        found = shutil.which(name)
        if found and "Slicer" in str(exe):
            return found
    return sys.executable


def coreCommand(*args: str) -> list[str]:
    return [pythonExecutable(), "-m", "polycl.cli.main", *[str(a) for a in args]]


class CoreProcess:
    """A running ``polycl`` command. Poll it; read ``fraction``, ``events``, ``lines``, ``returncode``."""

    def __init__(self, args: list[str], env: dict | None = None, cwd: str | None = None):
        self.args = list(args)
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:  # its own process group: PythonSlicer is a launcher whose child runs polycl; cancel signals both
            kwargs["start_new_session"] = True
        self._proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      bufsize=1, env=full_env, cwd=cwd, **kwargs)
        self._queue: "queue.Queue[str | None]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.lines: list[str] = []
        self.events: list[dict] = []
        self.fraction = 0.0
        self.message = ""
        self.cancelled = False
        self._eof = False

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def poll(self) -> list[str]:
        """New output lines since the last call (non-blocking); updates progress."""
        new = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof = True
                break
            new.append(line)
            self._digest(line)
        self.lines += new
        return new

    def _digest(self, line: str) -> None:
        text = line.strip()
        event = None
        if text.startswith("{") and text.endswith("}"):
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
        if isinstance(event, dict) and event.get("event") == "progress":
            self.events.append(event)
            total = float(event.get("total") or 0)
            self.fraction = min(1.0, float(event.get("done", 0)) / total) if total > 0 else self.fraction
            self.message = str(event.get("message", ""))[:200] or self.message
        elif text and not self.events:  # plain output (warnings, the CLI's last words) is kept in
            self.message = text[:200]    # ``lines``; once progress events come, they set the message

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc.poll() is None or not self._eof

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process ends (draining output); returns its exit status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(self.args[:4])} still running after {timeout} s")
            time.sleep(0.05)
        self.poll()
        return self._proc.returncode

    def _signal(self, sig) -> None:
        """Send ``sig`` to the whole process tree (POSIX: the process group the child leads)."""
        if os.name == "nt":
            self._proc.send_signal(sig)
            return
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass

    def cancel(self, grace: float = 20.0) -> None:
        """Ask the process tree to stop (SIGINT: fine-tuning saves its state), then terminate it,
        then kill it: the launcher (PythonSlicer) and the Python it started, and anything they started."""
        if self._proc.poll() is not None:
            return
        self.cancelled = True
        sigint = signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGINT  # type: ignore[attr-defined]
        for sig, wait in ((sigint, grace), (signal.SIGTERM, 5.0), (getattr(signal, "SIGKILL", signal.SIGTERM), 5.0)):
            self._signal(sig)
            try:
                self._proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            if os.name != "nt":  # the launcher ended; make sure no child of it lingers in the group
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            return

    def lastError(self) -> str:
        """The process's last 'error' line (polycl prints 'polycl CMD: error: ...'), or its last lines."""
        for line in reversed(self.lines):
            if ": error:" in line or line.startswith("Traceback") or "Error" in line:
                return line.strip()
        return "\n".join(self.lines[-5:])
