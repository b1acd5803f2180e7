"""``polycl-web --data DIR``: start the web front end (``PolyCLSegmentWeb``) from an installed polycl.

The web front end is part of the Slicer module (``PolyCLSegment/PolyCLSegmentWeb``, beside
``PolyCLSegment.py`` and ``PolyCLSegmentLib``), not of this package, and polycl never imports slicer.
This launcher only finds the module's folder and runs ``python -m PolyCLSegmentWeb`` there, in a process
of its own (``exec``: signals reach the server directly). Where it looks, first hit wins:

1. ``$POLYCL_WEB_MODULE_DIR`` (a folder holding ``PolyCLSegmentWeb/``);
2. the folder that holds polycl itself (polycl shipped inside the Slicer extension);
3. ``PolyCLSegment/`` of the source tree polycl is installed from (``pip install -e PolyCLCore``: the
   repository's ``PolyCLCore/src/polycl`` -> ``PolyCLSegment/``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PACKAGE = "PolyCLSegmentWeb"


def candidates() -> list[Path]:
    here = Path(__file__).resolve().parent  # .../polycl
    found = [Path(os.environ["POLYCL_WEB_MODULE_DIR"])] if os.environ.get("POLYCL_WEB_MODULE_DIR") else []
    return found + [here.parent, here.parents[2] / "PolyCLSegment"]


def module_dir() -> Path:
    """The folder holding ``PolyCLSegmentWeb/``; SystemExit with where it looked when there is none."""
    for folder in candidates():
        if (folder / PACKAGE / "__init__.py").is_file():
            return folder
    raise SystemExit("polycl-web: the web front end (PolyCLSegmentWeb) was not found; looked in "
                     + ", ".join(str(c) for c in candidates())
                     + ". Set POLYCL_WEB_MODULE_DIR to the folder that holds PolyCLSegmentWeb/.")


def main(argv: list[str] | None = None) -> int:
    folder = module_dir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    command = [sys.executable, "-m", PACKAGE, *(sys.argv[1:] if argv is None else argv)]
    if os.name == "posix":
        os.execve(sys.executable, command, env)
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
