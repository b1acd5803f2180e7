"""Where real data is: ``POLYCL_DATA_DIR`` (default ``../shared/data`` beside the repository).

On a user's machine the demo CT is downloaded from its public source with a SHA-256 check
(:func:`demo_ct`); tests never download.
"""

from __future__ import annotations

import os
from pathlib import Path

from polycl.errors import InputError

_REPO_ROOT = Path(__file__).resolve().parents[3]  # PolyCLCore/src/polycl -> repository root


def data_dir(required: bool = False) -> Path | None:
    """The shared real-CT folder, or None when absent (InputError when ``required``)."""
    env = os.environ.get("POLYCL_DATA_DIR")
    candidates = [Path(env)] if env else [_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    if required:
        raise InputError("real CT data not found: set POLYCL_DATA_DIR to the shared data folder")
    return None
