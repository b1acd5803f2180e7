"""The extension's files follow Slicer's conventions and stay consistent with each other.

Fails when a file is added to PolyCLSegmentLib/ or Resources/ but not to the CMake lists, when the
panel (.ui) and the parameter node disagree, or when building the panel would import torch.
"""

from __future__ import annotations

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
    on_disk_py = {"PolyCLSegment.py"} | {str(p.relative_to(MODULE)) for p in (MODULE / "PolyCLSegmentLib").rglob("*.py")
                                          if "__pycache__" not in p.parts}
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


def test_ui_matches_parameter_node_and_widget_code():
    ui = ET.parse(MODULE / "Resources" / "UI" / "PolyCLSegment.ui").getroot()
    names = {w.get("name") for w in ui.iter("widget")}
    bound = {}
    for w in ui.iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                bound[w.get("name")] = p.find("string").text
    source = (MODULE / "PolyCLSegment.py").read_text()
    block = source.split("class PolyCLSegmentParameterNode:", 1)[1].split("\n\n\n", 1)[0]
    parameters = set(re.findall(r"^    (\w+):", block, re.M))
    assert set(bound.values()) <= parameters, set(bound.values()) - parameters
    assert {"inputVolume", "segmentation", "finetuneFolder", "labelFraction"} <= set(bound.values())
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used <= names, f"widgets used in PolyCLSegment.py but missing from the .ui: {used - names}"
    combos = dict(re.findall(r'\("(\w+ComboBox)", "(\w+)"\)', source))  # Widget.DATA_COMBOS, by name
    assert len(combos) == 4 and set(combos) <= names and set(combos.values()) <= parameters, combos


def test_module_imports_without_torch_and_lists_devices():
    """Building the panel (module import, device list, capabilities) must not import torch."""
    code = (
        "import sys; sys.path[:0] = [%r, %r]\n"
        "from slicer_harness import install; install()\n"
        "import PolyCLSegment\n"
        "from PolyCLSegmentLib import backends\n"
        "choices = backends.deviceChoices(); assert choices[0][0] == 'auto' and choices[1][0] == 'cpu'\n"
        "for f in (backends.refineCapability, backends.propagateCapability, backends.finetuneCapability,\n"
        "          backends.batchCapability, backends.segmentCapability):\n"
        "    c = f(); assert c.available, (f.__name__, c.reason)  # everything is installed here\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n" % (str(ROOT / "Testing"), str(MODULE)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_panel_choices_are_what_polycl_accepts():
    """The mode and engine boxes offer exactly the values polycl.pipeline and polycl.propagate take."""
    from polycl.pipeline import MODES
    from polycl.propagate import ENGINES

    from PolyCLSegmentLib import backends

    assert sorted(v for v, _, _ in backends.SEGMENT_MODES) == sorted(MODES)
    assert sorted(v for v, _, _ in backends.engineChoices()) == sorted(ENGINES)
    assert all(label and tip for _, label, tip in backends.SEGMENT_MODES + tuple(backends.engineChoices()))
