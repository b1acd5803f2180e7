"""Import boundary: polycl never imports slicer, qt or vtk (README, Layout)."""

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


def test_every_third_party_import_is_declared_in_pyproject():
    """A package polycl imports must be a dependency or an extra of polycl-core, i.e. listed in
    polycl/requirements/*.txt, which pyproject.toml and the Slicer installer read (scipy imported but
    undeclared is the case this catches): pip would otherwise install a polycl that fails at run time."""
    import re
    from importlib.metadata import packages_distributions

    root = Path(polycl.__file__).parent
    declared = [line.split("#")[0].strip() for f in sorted((root / "requirements").glob("*.txt"))
                for line in f.read_text().splitlines() if line.split("#")[0].strip()]
    declared_names = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in declared}
    imported = set()
    for py in root.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = sorted(n for n in imported if n not in sys.stdlib_module_names and n != "polycl")
    dists = packages_distributions()
    undeclared = [n for n in third_party
                  if not {d.lower().replace("_", "-") for d in dists.get(n, [n])} & declared_names]
    assert len(third_party) >= 10  # torch, numpy, monai, SimpleITK, ... were found
    assert not undeclared, undeclared
