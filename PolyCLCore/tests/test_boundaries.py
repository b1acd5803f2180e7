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


def _import_graph(root: Path) -> dict[str, set[str]]:
    """polycl module -> the polycl modules it imports: every import statement, at the top or inside a
    function, relative ones resolved, ``if TYPE_CHECKING:`` blocks left out (they never run)."""
    modules = {}
    for py in root.rglob("*.py"):
        parts = list(py.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = py

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, py in modules.items():
        tree = ast.parse(py.read_text())
        skipped = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        package = name if py.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                deps |= {known(a.name) for a in node.names if a.name.startswith("polycl")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                if base.startswith("polycl"):
                    for a in node.names:  # "from polycl.x import y": y is a module when it is one
                        deps.add(known(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else known(base))
        graph[name] = {d for d in deps if d and d != name}
    return graph


def test_no_import_cycle_inside_polycl():
    """Layers: no polycl module reaches itself through its imports (local imports count too)."""
    graph = _import_graph(Path(polycl.__file__).parent)
    done, on_path, cycles = set(), [], []

    def visit(m):
        on_path.append(m)
        for d in sorted(graph.get(m, ())):
            if d in on_path:
                cycles.append(on_path[on_path.index(d):] + [d])
            elif d not in done:
                visit(d)
        on_path.pop()
        done.add(m)

    for m in sorted(graph):
        if m not in done:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles[:10])


def test_the_web_page_imports_no_slicer_module_file_and_has_no_qt_shim():
    web = Path(__file__).resolve().parents[2] / "PolyCLSegment" / "PolyCLSegmentWeb"
    for py in web.glob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("PolyCLSegment", "qt", "slicershim") for n in names), (py.name, names)
    assert not (web / "slicershim.py").exists()
