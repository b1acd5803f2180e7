"""The weight downloader against a real HTTP server on 127.0.0.1 (no mocks, no internet).

The server serves a generated 3 MiB file in several modes: normal (with Range support), ignoring
Range, truncated (announces the full length, closes halfway), corrupted (one byte flipped).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from polycl.download import DownloadError, cache_dir, download
from polycl.errors import Cancelled, ChecksumError
from polycl.progress import CancelToken, terminal

PAYLOAD = np.random.default_rng(0).integers(0, 256, 3 * 2**20 + 12345, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(BaseHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def do_GET(self):  # noqa: N802
        mode = self.path.strip("/").split("/")[0]
        Handler.requests.append((self.path, self.headers.get("Range")))
        if mode == "missing":
            self.send_error(404, "Not Found")
            return
        data = PAYLOAD
        if mode == "corrupt":
            data = bytearray(PAYLOAD)
            data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        start = 0
        rng = self.headers.get("Range")
        if rng and mode not in ("norange",):
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if mode == "truncate":  # promise everything, send half, hang up
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYCL_CACHE", str(tmp_path / "cache"))
    Handler.requests.clear()
    return tmp_path / "cache"


def test_download_verifies_and_caches(server, cache):
    calls = []
    path = download(f"{server}/ok/weights.bin", sha256=SHA, subdir="sam",
                    progress=lambda done, total, message: calls.append((done, total)))
    assert path == cache_dir("sam") / "weights.bin" == cache / "sam" / "weights.bin"
    assert path.read_bytes() == PAYLOAD
    assert not (cache / "sam" / "weights.bin.part").exists()
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(calls) >= 3
    n = len(Handler.requests)
    again = download(f"{server}/ok/weights.bin", sha256=SHA, subdir="sam")
    assert again == path and len(Handler.requests) == n  # verified file in the cache: no request at all


def test_corrupted_download_is_refused(server, cache):
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        download(f"{server}/corrupt/weights.bin", sha256=SHA)
    assert not (cache / "weights.bin").exists() and not (cache / "weights.bin.part").exists()


def test_truncated_download_is_refused_then_resumed(server, cache):
    with pytest.raises(ChecksumError, match="truncated"):
        download(f"{server}/truncate/weights.bin", sha256=SHA, retries=0)
    part = cache / "weights.bin.part"
    assert not (cache / "weights.bin").exists()
    assert 0 < part.stat().st_size < len(PAYLOAD)
    have = part.stat().st_size
    # the next call (server healthy again) resumes with a Range request instead of starting over
    path = download(f"{server}/ok/weights.bin", sha256=SHA)
    assert path.read_bytes() == PAYLOAD
    assert Handler.requests[-1] == ("/ok/weights.bin", f"bytes={have}-")


def test_resume_retries_within_one_call(server, cache):
    # each response is cut short; with retries the downloader keeps resuming and still verifies
    path = download(f"{server}/truncate/weights.bin", sha256=SHA, retries=30)
    assert path.read_bytes() == PAYLOAD
    ranges = [r for _, r in Handler.requests]
    assert ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:])


def test_resume_from_partial_file(server, cache):
    cache.mkdir(parents=True)
    (cache / "weights.bin.part").write_bytes(PAYLOAD[:1_000_000])
    path = download(f"{server}/ok/weights.bin", sha256=SHA)
    assert path.read_bytes() == PAYLOAD
    assert Handler.requests == [("/ok/weights.bin", "bytes=1000000-")]


def test_server_without_range_support_restarts(server, cache):
    cache.mkdir(parents=True)
    (cache / "weights.bin.part").write_bytes(b"garbage" * 1000)
    path = download(f"{server}/norange/weights.bin", sha256=SHA)
    assert path.read_bytes() == PAYLOAD


def test_complete_part_file_is_not_downloaded_again(server, cache):
    cache.mkdir(parents=True)
    (cache / "weights.bin.part").write_bytes(PAYLOAD)
    path = download(f"{server}/ok/weights.bin", sha256=SHA)
    assert path.read_bytes() == PAYLOAD
    assert Handler.requests[-1][1] == f"bytes={len(PAYLOAD)}-"  # answered 416 + total: nothing re-sent


def test_wrong_existing_file_is_replaced_only_by_a_verified_one(server, cache):
    cache.mkdir(parents=True)
    (cache / "weights.bin").write_bytes(b"old and wrong")
    with pytest.raises(ChecksumError):
        download(f"{server}/corrupt/weights.bin", sha256=SHA)
    assert (cache / "weights.bin").read_bytes() == b"old and wrong"  # untouched by the failed download
    download(f"{server}/ok/weights.bin", sha256=SHA)
    assert (cache / "weights.bin").read_bytes() == PAYLOAD


def test_size_mismatch_and_http_errors(server, cache):
    with pytest.raises(ChecksumError, match="registered size"):
        download(f"{server}/ok/weights.bin", sha256=SHA, size=len(PAYLOAD) - 1)
    assert not (cache / "weights.bin").exists()
    with pytest.raises(DownloadError, match="404"):
        download(f"{server}/missing/weights.bin", sha256=SHA)
    with pytest.raises(DownloadError, match="http"):
        download("ftp://127.0.0.1/weights.bin", sha256=SHA)
    with pytest.raises(DownloadError):  # nothing listens on port 9 of 127.0.0.1
        download("http://127.0.0.1:9/weights.bin", sha256=SHA, timeout=5)


def test_cancel_keeps_part_for_resume(server, cache):
    token = CancelToken()  # cancelled once the first chunk has arrived
    with pytest.raises(Cancelled, match="resuming"):
        download(f"{server}/ok/weights.bin", sha256=SHA, progress=lambda done, total, message: token.cancel(),
                 cancel=token)
    assert not (cache / "weights.bin").exists()
    assert (cache / "weights.bin.part").stat().st_size > 0
    assert download(f"{server}/ok/weights.bin", sha256=SHA).read_bytes() == PAYLOAD


def test_tqdm_progress_bar_and_unverified_warning(server, cache, capsys):
    with pytest.warns(UserWarning, match="SHA-256"):
        with terminal("other.bin", unit="B") as bar:
            path = download(f"{server}/ok/other.bin", sha256=None, progress=bar)
    assert path.read_bytes() == PAYLOAD
    assert "other.bin" in capsys.readouterr().err  # the tqdm bar names the file


def test_sam_registry_downloads_through_the_cache(server, cache, monkeypatch):
    """A registered checkpoint is fetched by ``checkpoint_path`` via download(); here a test
    entry points at the local server (the real ones point at dl.fbaipublicfiles.com)."""
    from polycl.sam import weights

    entry = weights.SamCheckpoint("test_sam", "vit_b", "test_sam.pth", f"{server}/ok/test_sam.pth", SHA,
                                  len(PAYLOAD), "sam", "test", "test")
    monkeypatch.setitem(weights.SAM_CHECKPOINTS, "test_sam", entry)
    with pytest.raises(Exception, match="not downloaded yet"):
        weights.checkpoint_path("test_sam", download=False)
    path = weights.checkpoint_path("test_sam")
    assert path == cache / "sam" / "test_sam.pth" and path.read_bytes() == PAYLOAD
    bad = weights.SamCheckpoint("bad_sam", "vit_b", "bad_sam.pth", f"{server}/corrupt/bad_sam.pth", SHA,
                                len(PAYLOAD), "sam", "test", "test")
    monkeypatch.setitem(weights.SAM_CHECKPOINTS, "bad_sam", bad)
    with pytest.raises(ChecksumError):
        weights.checkpoint_path("bad_sam")
    assert not (cache / "sam" / "bad_sam.pth").exists()


def test_nothing_downloads_at_import(cache):
    import subprocess
    import sys

    code = "import polycl.download, polycl.sam, polycl.sam.weights, polycl.sam.slice_refine"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "POLYCL_CACHE": str(cache)})
    assert not cache.exists()  # importing created no cache folder and downloaded nothing
