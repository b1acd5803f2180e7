"""Uploads: a CT sent from the browser lands in ``<data>/uploads/`` and is loaded, or is refused and removed.

The page sends the file in chunks (trame-slicer's chunked loader); an empty chunk list ends it. An upload
is kept only if it is an image file polycl reads and the module accepts as CT (the same check Segment runs).
"""

from __future__ import annotations

import os
from pathlib import Path

from .ui import UPLOAD_SUFFIXES


class Uploads:
    def __init__(self, app, maxMb: int):
        self.app = app
        self.maxMb = int(maxMb)
        self._files: list = []

    async def chunk(self, files):
        """Chunks of an upload; an empty list ends it."""
        if files:
            self._files.extend(files)
            if sum(int(f.get("size") or 0) for f in self._files) > self.maxMb * 1_000_000:
                self._files = []
                self.app.say(error=f"upload refused: larger than {self.maxMb} MB")
            return
        received, self._files = self._files, []
        if received:
            self.accept(received[0])

    def _store(self, name: str, content: bytes) -> Path:
        """Write ``content`` under ``<data>/uploads/`` with a name no other file has (atomically)."""
        folder = self.app.data.root / "uploads"
        folder.mkdir(exist_ok=True)
        suffix = next(s for s in UPLOAD_SUFFIXES if name.lower().endswith(s))
        stem, suffix = name[: -len(suffix)], name[-len(suffix):]
        target, n = folder / name, 1
        while target.exists():
            target, n = folder / f"{stem}-{n}{suffix}", n + 1
        partial = folder / f".partial-{target.name}"
        partial.write_bytes(content)
        os.replace(partial, target)
        return target

    def accept(self, fileState: dict):
        """Store an uploaded image, load it, and keep it only if the module accepts it as CT."""
        from trame.app.file_upload import ClientFile

        app = self.app
        upload = ClientFile(fileState)
        name = Path(str(upload.name or "")).name.replace(" ", "_")
        if not name.lower().endswith(UPLOAD_SUFFIXES) or name.startswith("."):
            return app.say(error=f"upload refused: {name!r} is not a NIfTI, NRRD or MHA file "
                           f"({', '.join(UPLOAD_SUFFIXES)})")
        content = upload.content or b""
        if not content or len(content) > self.maxMb * 1_000_000:
            return app.say(error="upload refused: empty, or larger than the limit")
        target = self._store(name, content)
        relName = target.relative_to(app.data.root).as_posix()
        app.refreshFiles(select=relName)
        app.onLoad()
        ok = app.volumeNode is not None and app.state.polycl_loaded == relName
        why = app.state.polycl_error or "it could not be read"
        if ok:
            try:
                app.checkCt()
            except Exception as exc:  # noqa: BLE001 - the module's message
                ok, why = False, str(exc)
        if not ok:
            app.unload()
            target.unlink(missing_ok=True)
            app.refreshFiles()
            return app.say("Upload removed.", error=f"upload refused: {why}")
        app.say(f"Uploaded and loaded {relName}.")
