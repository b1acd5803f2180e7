"""Uploads: a CT sent from the browser lands in ``<data>/uploads/`` and is loaded, or is refused and removed.

The page sends the file in chunks (trame-slicer's chunked loader); an empty chunk list ends it. An upload
is kept only if it is an image file polycl reads and accepts as CT (the check Segment runs), checked
before the loaded CT is touched: a refused upload changes nothing. Loading it over segments that are
not saved asks first.
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

    def _store(self, name: str, content: bytes) -> tuple[Path, Path]:
        """Write ``content`` under ``<data>/uploads/`` as a hidden partial file (atomically); returns
        (the partial file, the name it will have: one no other file has)."""
        folder = self.app.data.root / "uploads"
        folder.mkdir(exist_ok=True)
        suffix = next(s for s in UPLOAD_SUFFIXES if name.lower().endswith(s))
        stem, suffix = name[: -len(suffix)], name[-len(suffix):]
        target, n = folder / name, 1
        while target.exists():
            target, n = folder / f"{stem}-{n}{suffix}", n + 1
        partial = folder / f".partial-{target.name}"
        writing = folder / f".writing-{target.name}"
        writing.write_bytes(content)
        os.replace(writing, partial)
        return partial, target

    @staticmethod
    def check(path: Path) -> None:
        """Raise the reason an uploaded file is refused: it must read as a 3D volume that Segment
        accepts as CT (``polycl.validate.require_ct``, the check Segment runs). Reads the file only."""
        from polycl.io import read_volume
        from polycl.validate import check_3d_volume, require_ct

        volume = read_volume(path)
        check_3d_volume(volume)
        require_ct(volume)

    def accept(self, fileState: dict):
        """Check an uploaded image, store it, and load it. A refused upload changes nothing: the file is
        checked before the loaded CT is touched, and removed. Loading it over unsaved segments asks first."""
        from trame.app.file_upload import ClientFile

        from polycl.errors import PolyCLError

        app = self.app
        upload = ClientFile(fileState)
        name = Path(str(upload.name or "")).name.replace(" ", "_")
        if not name.lower().endswith(UPLOAD_SUFFIXES) or name.startswith("."):
            return app.say(error=f"upload refused: {name!r} is not a NIfTI, NRRD or MHA file "
                           f"({', '.join(UPLOAD_SUFFIXES)})")
        content = upload.content or b""
        if not content or len(content) > self.maxMb * 1_000_000:
            return app.say(error="upload refused: empty, or larger than the limit")
        partial, target = self._store(name, content)
        try:
            self.check(partial)
        except PolyCLError as exc:
            partial.unlink(missing_ok=True)
            why = str(exc).replace(str(partial), name)
            return app.say("Upload removed; nothing else changed.", error=f"upload refused: {why}")
        os.replace(partial, target)
        relName = target.relative_to(app.data.root).as_posix()
        app.refreshFiles(select=app.entry.name if app.entry is not None else None)

        def load():
            app.refreshFiles(select=relName)
            app.onLoadNow()
            if app.volumeNode is not None and app.state.polycl_loaded == relName:
                app.say(f"Uploaded and loaded {relName}.")

        def keep():
            target.unlink(missing_ok=True)
            app.refreshFiles(select=app.entry.name if app.entry is not None else None)
            app.say("Upload not loaded (and removed); your segments are kept.")

        current = app.entry.title if app.entry is not None else "the loaded CT"
        app.askFirst(f"The segments of {current} are not saved. Load the upload {relName} and discard them?",
                     load, keep)
