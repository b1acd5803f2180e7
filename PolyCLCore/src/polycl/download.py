"""Downloading user-requested weight files: cached, resumable, SHA-256 checked, atomic.

Used for checkpoints a user asks for on their own machine (SAM ViT-B/L/H, SAM 2, ...). Nothing in
polycl downloads at import time or during the test suite's normal run.

A download goes to ``<cache>/<subdir>/<filename>.part`` and is moved into place (``os.replace``)
only after its SHA-256 matched, so the destination either holds a verified file or nothing new.
An interrupted download leaves the ``.part`` file; the next call resumes it with an HTTP
``Range`` request (servers that ignore ``Range`` make it start again). A truncated or corrupted
download raises :class:`~polycl.errors.ChecksumError`.

The cache is ``$POLYCL_CACHE`` when set, else ``polycl_home()/cache`` (``~/.polycl/cache``).
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlparse

from polycl.errors import ChecksumError, PolyCLError
from polycl.hashing import sha256_file
from polycl.progress import CancelToken, Progress, Reporter

CHUNK = 1 << 20
USER_AGENT = "polycl-core downloader (python urllib)"


class DownloadError(PolyCLError):
    """The server could not be reached or refused the request (network, HTTP error)."""


def cache_dir(subdir: str | None = None) -> Path:
    """The download cache: ``$POLYCL_CACHE`` or ``polycl_home()/cache`` (created on demand by
    :func:`download`, not here)."""
    from polycl.home import polycl_home

    root = Path(os.environ["POLYCL_CACHE"]).expanduser() if os.environ.get("POLYCL_CACHE") else polycl_home() / "cache"
    return root / subdir if subdir else root


def filename_from_url(url: str) -> str:
    name = Path(urlparse(url).path).name
    if not name or not re.match(r"^[A-Za-z0-9._-]+$", name):
        raise DownloadError(f"cannot take a safe file name from the URL {url!r}; pass filename=")
    return name


def download(url: str, *, sha256: str | None, filename: str | None = None, dest_dir: str | os.PathLike | None = None,
             subdir: str | None = None, size: int | None = None, progress: Progress | None = None,
             cancel: CancelToken | None = None, timeout: float = 60.0, retries: int = 2) -> Path:
    """Download ``url`` into the cache (or ``dest_dir``) and return the verified file's path.

    Args:
        url: http(s) address.
        sha256: expected SHA-256 (hex). ``None`` accepts any content (a warning says so; use only for
            files whose hash is not published).
        filename: name in the cache (default: the URL's last path part).
        dest_dir: folder to put the file in (default ``cache_dir(subdir)``).
        size: expected size in bytes, when known (checked before hashing, gives a clearer message).
        progress: ``progress(done_bytes, total_bytes or 0, message)`` after every chunk
            (:mod:`polycl.progress`; :func:`polycl.progress.terminal` gives a tqdm bar).
        cancel: a :class:`~polycl.progress.CancelToken` checked between chunks; when cancelled,
            :class:`Cancelled` is raised and the ``.part`` file is kept so the next call resumes.
        retries: how many times a connection that ended early is resumed before giving up.

    An existing file with the right hash is returned without network access. An existing file
    with the wrong hash is replaced only once a new, verified download is complete.

    Raises:
        ChecksumError: the downloaded bytes do not match ``sha256``/``size`` (truncated or corrupt);
            the destination is left as it was. A truncated ``.part`` is kept for resuming, a
            complete-but-wrong one is deleted.
        DownloadError: network or HTTP failure.
        Cancelled: the ``cancel`` token was cancelled.
    """
    folder = Path(dest_dir).expanduser() if dest_dir is not None else cache_dir(subdir)
    name = filename or filename_from_url(url)
    dest = folder / name
    part = folder / (name + ".part")
    if sha256 is None:
        warnings.warn(f"downloading {url} without a registered SHA-256: its content cannot be verified",
                      stacklevel=2)
    elif dest.is_file() and sha256_file(dest) == sha256.lower():
        return dest
    folder.mkdir(parents=True, exist_ok=True)

    report = Reporter(progress, cancel, cancelled_message=f"download of {url} cancelled; the bytes received are "
                                                         f"kept in {part} for resuming")
    total = _fetch(url, part, size=size, report=report, name=name, timeout=timeout, retries=retries)

    have = part.stat().st_size
    if total is not None and have < total:
        raise ChecksumError(
            f"{url}: download truncated ({have} of {total} bytes) after {retries + 1} attempt(s); run again to "
            f"resume from {part}")
    if size is not None and have != size:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url}: downloaded {have} bytes, the registered size is {size}; the file was discarded")
    actual = sha256_file(part)
    if sha256 is not None and actual != sha256.lower():
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{url}: SHA-256 mismatch (expected {sha256.lower()}, downloaded file has {actual}); the download "
            "was corrupt or the server sent another file. It was discarded; nothing was installed.")
    os.replace(part, dest)
    return dest


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) only, checked below)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            return exc  # range not satisfiable: the .part may already be complete
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot download ({reason}); check the network or download the file by hand "
                            "and pass its path") from None


def _fetch(url: str, part: Path, *, size, report: Reporter, name: str, timeout: float, retries: int) -> int | None:
    """Fill ``part`` from ``url``, resuming what is there. Returns the total size when known."""
    if urlparse(url).scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http(s) addresses can be downloaded")
    total: int | None = size
    for _attempt in range(retries + 1):
        start = part.stat().st_size if part.is_file() else 0
        if total is not None and start == total:
            return total
        if total is not None and start > total:
            part.unlink()
            start = 0
        response = _open(url, start, timeout)
        if isinstance(response, urllib.error.HTTPError):  # 416
            response.close()
            content_range = response.headers.get("Content-Range", "")
            m = re.match(r"bytes \*/(\d+)", content_range)
            if m and int(m.group(1)) == start:
                return start
            part.unlink()  # the .part is longer than the file or unusable: start again
            continue
        with response:
            status = getattr(response, "status", 200)
            if start and status == 206:
                m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != start:
                    raise DownloadError(f"{url}: server answered the resume request with a wrong range "
                                        f"({response.headers.get('Content-Range')!r})")
                if m.group(3) != "*":
                    total = int(m.group(3))
                mode = "ab"
            else:  # 200: full content (first try, or a server that ignores Range)
                start, mode = 0, "wb"
                length = response.headers.get("Content-Length")
                if length is not None:
                    total = int(length)
            done = start
            with open(part, mode) as out:
                while True:
                    report.check()
                    try:
                        block = response.read(CHUNK)
                    except (OSError, ValueError):  # connection reset / IncompleteRead
                        break
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    report(done, total or 0, f"downloading {name}")
        if total is None or done >= total:
            return total
    return total
