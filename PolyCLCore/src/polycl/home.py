"""Where polycl keeps the user's files: ``$POLYCL_HOME``, default ``~/.polycl`` (models, atlases, caches).

A leaf module (it imports nothing of polycl), so the model registry, the atlas store and the
download cache can all use it without knowing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def polycl_home() -> Path:
    """``$POLYCL_HOME`` or ``~/.polycl`` (not created here)."""
    return Path(os.environ.get("POLYCL_HOME", Path.home() / ".polycl")).expanduser()
