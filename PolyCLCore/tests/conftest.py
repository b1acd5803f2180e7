"""Shared fixtures: the real CT folder and small helpers.

Tests that need the real data use the ``data`` fixture. Without it they skip, except under
``CI=true``, where a missing data folder is a failure (CI must never pass by skipping).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from polycl.datasets import data_dir

# One torch thread per test process: on 2-core machines two OpenMP threads slow down ~10x as soon
# as anything else runs (spinning barriers). Set POLYCL_TEST_THREADS to override.
import torch  # noqa: E402

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


@pytest.fixture(scope="session")
def example_ct(ts):
    from polycl.io import read_volume

    return read_volume(ts / "example_ct.nii.gz")


@pytest.fixture(scope="session")
def example_liver(ts):
    """Liver mask (label 5) of example_ct, on its grid."""
    from polycl.io import read_label, select_labels

    lab = read_label(ts / "example_seg_fast_force_split.nii.gz")
    return lab.with_array(select_labels(lab.array, 5))


@pytest.fixture(scope="session")
def dicom_ct(ts):
    from polycl.io import read_volume

    return read_volume(ts / "example_ct_dicom")


@pytest.fixture(scope="session")
def dicom_liver(ts, dicom_ct):
    """Liver of the DICOM series, resampled in physical space (its label file is y-flipped)."""
    from polycl.io import label_on_image_grid, read_label, select_labels

    lab = label_on_image_grid(read_label(ts / "example_seg_dicom.nii.gz"), dicom_ct)
    return lab.with_array(select_labels(lab.array, 5))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    denom = a.sum() + b.sum()
    return float(2 * (a & b).sum() / denom) if denom else 1.0
