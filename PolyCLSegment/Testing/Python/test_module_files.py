"""The extension's files follow Slicer's conventions and stay consistent with each other.

Fails when a file is added to PolyCLSegmentLib/, PolyCLSegmentWeb/ or Resources/ but not to the CMake lists, when the
panel (.ui) and the parameter node disagree, or when building the panel would import torch.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MODULE = ROOT / "PolyCLSegment"


def _cmake_list(text: str, var: str) -> list[str]:
    m = re.search(r"set\(\s*" + var + r"\s+(.*?)\)", text, re.S)
    assert m, f"{var} not found"
    return [line.split("#")[0].strip().replace("${MODULE_NAME}", "PolyCLSegment")
            for line in m.group(1).splitlines() if line.split("#")[0].strip()]


def test_module_cmake_lists_every_file():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    on_disk_py = {"PolyCLSegment.py"} | {str(p.relative_to(MODULE)) for package in ("PolyCLSegmentLib", "PolyCLSegmentWeb")
                                          for p in (MODULE / package).rglob("*.py") if "__pycache__" not in p.parts}
    on_disk_res = {str(p.relative_to(MODULE)) for p in (MODULE / "Resources").rglob("*") if p.is_file()}
    assert set(scripts) == on_disk_py, f"CMake vs disk: missing {on_disk_py - set(scripts)}, stale {set(scripts) - on_disk_py}"
    assert set(resources) == on_disk_res, f"missing {on_disk_res - set(resources)}, stale {set(resources) - on_disk_res}"
    assert re.search(r"slicerMacroBuildScriptedModule\(.*WITH_GENERIC_TESTS", text, re.S)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_extension_cmake_metadata():
    text = (ROOT / "CMakeLists.txt").read_text()
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(r"set\(" + var + r" \"[^\"]+\"\)", text), var
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "add_subdirectory(PolyCLSegment)" in text
    assert "find_package(Slicer REQUIRED)" in text and "Slicer_EXTENSION_CPACK" in text
    # the icon and screenshot addresses name files that exist in the repository
    for var in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        url = re.search(r"set\(" + var + r" \"([^\"]+)\"\)", text).group(1)
        assert (ROOT / url.split("/main/", 1)[1]).is_file(), url


def _module_ast() -> ast.Module:
    return ast.parse((MODULE / "PolyCLSegment.py").read_text())


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def test_ui_matches_parameter_node_settings_and_widget_code():
    """SlicerParameterName bindings name parameter node fields; the parameter node carries every
    Settings field (the controller's settings are read from it); the Widget uses only widgets of the .ui."""
    from PolyCLSegmentLib.settings import Settings

    ui = ET.parse(MODULE / "Resources" / "UI" / "PolyCLSegment.ui").getroot()
    names = {w.get("name") for w in ui.iter("widget")}
    bound = {}
    for w in ui.iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                bound[w.get("name")] = p.find("string").text
    tree = _module_ast()
    parameters = {n.target.id for n in _class(tree, "PolyCLSegmentParameterNode").body if isinstance(n, ast.AnnAssign)}
    assert set(bound.values()) <= parameters, set(bound.values()) - parameters
    assert {"inputVolume", "segmentation", "finetuneFolder", "labelFraction", "propagateFromClicks"} <= set(bound.values())
    assert set(Settings.names()) <= parameters, set(Settings.names()) - parameters
    widget = _class(tree, "PolyCLSegmentWidget")
    used = {n.attr for n in ast.walk(widget) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "ui"}
    assert used <= names, f"widgets used in PolyCLSegment.py but missing from the .ui: {used - names}"
    assert {"includeButton", "excludeButton", "boxButton", "clearPromptsButton", "finishSegmentButton"} <= used
    combos = next(ast.literal_eval(n.value) for n in widget.body
                  if isinstance(n, ast.Assign) and n.targets[0].id == "DATA_COMBOS")
    assert len(combos) == 4 and {w for w, _ in combos} <= names and {p for _, p in combos} <= parameters, combos


def test_module_imports_without_torch_and_capabilities_say_why():
    """Building the panel (module import, device list, capabilities) must not import torch; without
    the bundled polycl every feature is unavailable and says to reinstall the extension."""
    code = (
        "import sys; sys.path[:0] = [%r, %r]\n"
        "from slicer_harness import install; install()\n"
        "import PolyCLSegment\n"
        "from PolyCLSegmentLib import capabilities as c\n"
        "choices = c.deviceChoices(); assert [v for v, _, _ in choices[:2]] == ['auto', 'cpu'], choices\n"
        "features = (c.refineCapability, c.propagateCapability, c.finetuneCapability, c.batchCapability)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "c.polyclPackageDir = lambda: None\n"
        "for f in features + (c.coreInstalled,):\n"
        "    cap = f(); assert not cap and 'reinstall' in cap.reason, (f.__name__, cap)\n"
        "print('ok')\n" % (str(ROOT / "Testing"), str(MODULE)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_sam2_engine_says_why_it_cannot_run(monkeypatch, tmp_path):
    """No SAM 2 weights in the cache: the engine box says so, and 'auto' still runs (chain)."""
    from PolyCLSegmentLib import capabilities

    monkeypatch.setattr(capabilities, "sam2WeightsCached", lambda: False)
    engines = capabilities.propagationEngines()
    assert not engines["sam2"] and "weights" in engines["sam2"].reason
    assert capabilities.propagateCapability("auto") and not capabilities.propagateCapability("sam2")
    labels = {v: label for v, label, _ in capabilities.engineChoices()}
    assert labels["sam2"] == "sam2 (unavailable)" and labels["chain"] == "chain"


def test_panel_choices_are_what_polycl_accepts():
    """The mode and engine boxes offer exactly the values polycl.segment and polycl.propagate take."""
    from polycl.propagate import ENGINES
    from polycl.segment import MODES

    from PolyCLSegmentLib.controller import Controller

    choices = Controller.choices()
    assert sorted(v for v, _, _ in choices["modes"]) == sorted(MODES)
    assert sorted(v for v, _, _ in choices["engines"]) == sorted(ENGINES)
    assert all(label and tip for _, label, tip in choices["modes"] + choices["engines"])
