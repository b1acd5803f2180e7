"""Import boundary: polycl never imports slicer, qt or vtk (DESIGN.md)."""

import ast
import subprocess
import sys
from pathlib import Path

import polycl

FORBIDDEN = ("slicer", "qt", "ctk", "vtk", "PythonQt", "mrml")


def test_no_forbidden_imports_in_source():
    root = Path(polycl.__file__).parent
    offenders = []
    for py in root.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{py.relative_to(root)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_importing_every_module_loads_no_forbidden_package():
    code = (
        "import importlib, pkgutil, sys, polycl\n"
        "for m in pkgutil.walk_packages(polycl.__path__, 'polycl.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
