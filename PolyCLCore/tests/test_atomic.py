"""Atomic writes: complete under the final name or absent; the usual permissions; the process
umask is never changed, not even for a moment (a brief umask(0) races with other threads)."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from polycl.atomic import atomic_path, write_text_atomic


def test_written_file_has_umask_permissions_and_no_leftovers(tmp_path):
    old = os.umask(0o027)
    try:
        out = write_text_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert out.read_text() == "{}"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.nii.gz", ".nii.gz") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the umask from /proc on Linux")
def test_umask_is_read_without_being_set(tmp_path, monkeypatch):
    def forbidden(mask):  # any call would briefly change the umask of every thread
        raise AssertionError(f"os.umask({mask:o}) called")

    monkeypatch.setattr(os, "umask", forbidden)
    out = write_text_atomic(tmp_path / "c.txt", "x")
    assert out.read_text() == "x"
