"""pytest fixtures shared by the core's and the Slicer module's test suites.

``data``: the real CT folder (POLYCL_DATA_DIR or ../shared/data). Without it tests skip, except
under ``CI=true``, where a missing folder is a failure (CI must never pass by skipping).
``ts``: its TotalSegmentator subfolder.

:func:`one_torch_thread` is called by both conftests: on 2-core machines two OpenMP threads slow
down ~10x as soon as anything else runs (spinning barriers). POLYCL_TEST_THREADS overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from polycl.datasets import data_dir

#: The development data folder beside the repository, unless POLYCL_DATA_DIR names another (the
#: package itself never guesses; subprocesses of the tests inherit it).
os.environ.setdefault("POLYCL_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))


def one_torch_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("POLYCL_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def data() -> Path:
    d = data_dir()
    if d is None:
        message = "real CT data missing: set POLYCL_DATA_DIR (see ../shared/data/README.md)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return d


@pytest.fixture(scope="session")
def ts(data) -> Path:
    """The TotalSegmentator folder."""
    return data / "totalsegmentator"
