"""The demo's download path on a machine without the shared data, against a real HTTP server on 127.0.0.1."""

import functools
import http.server
import threading

import pytest

from polycl.demo import DEMO_FILES, demo_inputs
from polycl.errors import ChecksumError


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_demo_downloads_and_checks(tmp_path, ts, server, monkeypatch):
    root, url = server
    for name in DEMO_FILES:
        (root / name).write_bytes((ts / name).read_bytes())
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("POLYCL_DATA_DIR", str(empty))
    monkeypatch.setenv("POLYCL_HOME", str(tmp_path / "home"))
    ct, label = demo_inputs(url)
    assert ct.parent == tmp_path / "home" / "demo" and ct.read_bytes() == (ts / "example_ct.nii.gz").read_bytes()
    assert label.name == "example_seg_fast_force_split.nii.gz"


def test_demo_refuses_a_wrong_file(tmp_path, ts, server, monkeypatch):
    root, url = server
    (root / "example_ct.nii.gz").write_bytes((ts / "example_ct_sm.nii.gz").read_bytes())  # not the registered file
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("POLYCL_DATA_DIR", str(empty))
    monkeypatch.setenv("POLYCL_HOME", str(tmp_path / "home"))
    with pytest.raises(ChecksumError):
        demo_inputs(url)
    assert not (tmp_path / "home" / "demo" / "example_ct.nii.gz").exists()
