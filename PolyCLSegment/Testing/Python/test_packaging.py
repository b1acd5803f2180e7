"""The extension ships polycl: CMake lists every file of the package, and polycl imports and
segments from the extension's install layout in a fresh interpreter with no repository on the path.

The layout is what ``ctkMacroCompilePythonScript`` / ``slicerMacroBuildScriptedModule`` produce in
Slicer's ``qt-scripted-modules`` folder: every listed script and resource copied under its listed
relative path. Building the real extension needs a Slicer build tree, which these machines lack.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CORE_SRC = ROOT / "PolyCLCore" / "src"
MODULE = ROOT / "PolyCLSegment"


def cmake_list(path: Path, var: str) -> list[str]:
    m = re.search(r"set\(\s*" + var + r"\s+(.*?)\)", path.read_text(), re.S)
    assert m, f"{var} not in {path}"
    return [line.split("#")[0].strip().replace("${MODULE_NAME}", "PolyCLSegment")
            for line in m.group(1).splitlines() if line.split("#")[0].strip()]


def package_files() -> set[str]:
    """Every file pip would install for polycl: its .py files and the package-data globs of pyproject."""
    globs = tomllib.loads((ROOT / "PolyCLCore" / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["polycl"]
    pkg = CORE_SRC / "polycl"
    files = {str(p.relative_to(CORE_SRC)) for p in pkg.rglob("*.py") if "__pycache__" not in p.parts}
    for pattern in globs:
        files |= {str(p.relative_to(CORE_SRC)) for p in pkg.glob(pattern)}
    return files


def test_extension_cmake_lists_every_file_of_polycl():
    cmake = CORE_SRC / "CMakeLists.txt"
    listed = cmake_list(cmake, "POLYCL_PYTHON_SCRIPTS") + cmake_list(cmake, "POLYCL_PYTHON_RESOURCES")
    on_disk = package_files()
    assert len(listed) == len(set(listed))
    assert set(listed) == on_disk, f"missing {sorted(on_disk - set(listed))}, stale {sorted(set(listed) - on_disk)}"
    assert any(f.endswith("polycl-liver.pt") for f in listed) and "polycl/requirements/core.txt" in listed
    top = (ROOT / "CMakeLists.txt").read_text()
    assert top.index("add_subdirectory(PolyCLCore/src)") < top.index("add_subdirectory(PolyCLSegment)")
    assert "ctkMacroCompilePythonScript(" in cmake.read_text() and "Slicer_QTSCRIPTEDMODULES_LIB_DIR" in cmake.read_text()


def install_layout(dest: Path) -> Path:
    """Copy what the extension's CMake installs into ``dest`` (a stand-in for qt-scripted-modules)."""
    cmake = CORE_SRC / "CMakeLists.txt"
    for rel in cmake_list(cmake, "POLYCL_PYTHON_SCRIPTS") + cmake_list(cmake, "POLYCL_PYTHON_RESOURCES"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(CORE_SRC / rel, dest / rel)
    module_cmake = MODULE / "CMakeLists.txt"
    for rel in cmake_list(module_cmake, "MODULE_PYTHON_SCRIPTS") + cmake_list(module_cmake, "MODULE_PYTHON_RESOURCES"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(MODULE / rel, dest / rel)
    return dest


def test_polycl_imports_and_segments_from_the_install_layout(ts, tmp_path):
    layout = install_layout(tmp_path / "lib" / "Slicer-5.10" / "qt-scripted-modules")
    code = f"""
import json, sys
repo, venv = {str(ROOT)!r}, {str(Path(sys.prefix))!r}
def in_repo(path):  # the repository's source tree (its .venv, where torch lives, is not source)
    return bool(path) and path.startswith(repo) and not path.startswith(venv)
sys.path[:] = [p for p in sys.path if not in_repo(p)]      # no source tree on the path
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__name__.lower()
                    and 'editable' not in getattr(f, '__name__', '').lower()]
sys.path.insert(0, {str(layout)!r})
import torch
torch.set_num_threads(1)
import polycl
from polycl.inference import load_model
from polycl.io import read_label, read_volume, select_labels
from polycl import segment
ct = read_volume({str(ts / "example_ct.nii.gz")!r})
truth = select_labels(read_label({str(ts / "example_seg_fast_force_split.nii.gz")!r}).array, 5)
model = load_model("polycl-liver", "cpu")
mask = segment.run(ct, model, segment.SegmentOptions(mode="unet", device="cpu")).mask
dice = 2 * float((mask.astype(bool) & truth.astype(bool)).sum()) / float(mask.astype(bool).sum() + truth.sum())
from PolyCLSegmentLib import dependencies
print(json.dumps({{"polycl": polycl.__file__, "model": str(model.entry.path), "dice": dice,
                  "missing": dependencies.missing("refine"),
                  "repo_modules": sorted(m for m, mod in sys.modules.items()
                                         if in_repo(getattr(mod, "__file__", None) or ""))}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["polycl"].startswith(str(layout)) and got["model"].startswith(str(layout))
    assert got["repo_modules"] == []  # nothing was imported from the repository
    assert got["dice"] > 0.85  # the bundled liver model on its scan (0.901 measured; model card)
    assert got["missing"] == [False, []]  # bounds read from the shipped requirement files; all present here
