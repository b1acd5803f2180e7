"""The web front end's rules that need no browser: access policy, data-folder confinement, the Qt
stand-ins it runs the module with, and that it is a product (no import from Testing/, an installed
command) (PolyCLSegment/PolyCLSegmentWeb)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
WEB = ROOT / "PolyCLSegment" / "PolyCLSegmentWeb"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_web_package_imports_nothing_from_testing():
    """The product never reaches into Testing/ (the harness, data fixtures) or puts it on sys.path."""
    files = sorted(WEB.rglob("*.py"))
    assert len(files) >= 8, "no web package"
    testing = {p.stem for p in (ROOT / "Testing").glob("*.py")}
    offenders = [f"{p.name}:{line}: {name}" for p in files for line, name in _imports(p) if name.split(".")[0] in testing]
    offenders += [p.name for p in files if '"Testing"' in p.read_text() or "'Testing'" in p.read_text()]
    assert not offenders, offenders
    assert max(len(p.read_text().splitlines()) for p in files) <= 500


def test_slicer_shim_is_explicit():
    """The Qt stand-in provides the names the module uses, each defined; anything else is an error
    (nothing is silently swallowed)."""
    import slicershim

    qt = slicershim.qtModule()
    assert qt.Qt.ToolTipRole == 3
    with pytest.raises(slicershim.NoQtError):
        qt.QTimer()
    with pytest.raises(AttributeError, match="qt.QWidget"):
        qt.QWidget  # noqa: B018
    slm = slicershim.scriptedLoadableModule()
    with pytest.raises(slicershim.NoQtError):
        slm.ScriptedLoadableModuleWidget().setup()
    pnw = slicershim.parameterNodeWrapperModule()

    @pnw.parameterNodeWrapper
    class P:
        a: int = 3

    assert P().a == 3 and pnw.Annotated[int, pnw.WithinRange(0, 1)] is int


def test_polycl_web_command_finds_the_module(tmp_path):
    """``polycl-web`` (installed with polycl-core) finds PolyCLSegmentWeb and starts it: --help answers
    from a folder outside the repository, through the launcher's exec."""
    command = Path(sys.executable).parent / "polycl-web"
    assert command.is_file(), "polycl-web is not installed (pip install -e PolyCLCore)"
    out = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0 and "--data" in out.stdout and "polycl-web" in out.stdout, out.stderr[-2000:]


def test_policy_defaults_to_loopback_and_requires_a_token_elsewhere():
    from PolyCLSegmentWeb.security import resolvePolicy

    p = resolvePolicy()
    assert p.host == "127.0.0.1" and p.token is None
    assert resolvePolicy("localhost").token is None
    exposed = resolvePolicy("0.0.0.0")
    assert exposed.generated and len(exposed.token) >= 24 and exposed.token != resolvePolicy("0.0.0.0").token
    assert "?token=" + exposed.token in exposed.url(8080)
    given = resolvePolicy("10.1.2.3", "s3cret")
    assert given.token == "s3cret" and not given.generated
    assert resolvePolicy("127.0.0.1", "t").token == "t"  # an explicit token protects loopback too
    with pytest.raises(ValueError):
        resolvePolicy("0.0.0.0", " ")


def test_request_checks():
    from PolyCLSegmentWeb.security import check, resolvePolicy

    def ask(policy, host="127.0.0.1:8080", origin=None, ws=False, q=None, c=None, auth=None):
        return check(policy, hostHeader=host, origin=origin, isWebsocket=ws, queryToken=q, cookieToken=c,
                     authorization=auth)

    local = resolvePolicy()
    assert ask(local)[0] and ask(local, host="localhost:8080")[0]
    assert not ask(local, host="evil.example:8080")[0]  # DNS rebinding onto a loopback server
    assert not ask(local, ws=True, origin="http://evil.example")[0]  # another site's page
    assert ask(local, ws=True, origin="http://127.0.0.1:8080")[0]
    guarded = resolvePolicy("127.0.0.1", "tok")
    assert not ask(guarded)[0] and not ask(guarded, q="wrong")[0] and not ask(guarded, c="tok2")[0]
    assert ask(guarded, q="tok") == (True, "", True)  # the URL's token sets the cookie
    assert ask(guarded, c="tok") == (True, "", False) and ask(guarded, auth="Bearer tok")[0]
    exposed = resolvePolicy("0.0.0.0", "tok")
    assert ask(exposed, host="203.0.113.5:8080", q="tok")[0] and not ask(exposed, host="203.0.113.5:8080")[0]


def test_data_folder_lists_images_and_refuses_everything_else(tmp_path, ts):
    from PolyCLSegmentWeb.files import DataFolder

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ct.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    (tmp_path / "series").symlink_to(ts / "example_ct_dicom")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a" / "ct.polycl.labels.nii.gz").write_text("ours")
    secret = tmp_path.parent / f"{tmp_path.name}-outside.nii.gz"
    secret.write_text("no")
    folder = DataFolder(tmp_path)
    names = {(e.name, e.kind) for e in folder.listImages()}
    assert names == {("a/ct.nii.gz", "file"), ("series", "dicom")}
    entry, files = folder.resolve("series")
    assert entry.kind == "dicom" and len(files) == 20
    for bad in ("../" + secret.name, str(secret), "a/../../" + secret.name, "notes.txt", "a/ct.polycl.labels.nii.gz"):
        with pytest.raises((PermissionError, FileNotFoundError)):
            folder.resolve(bad)
    entry, _ = folder.resolve("a/ct.nii.gz")
    assert folder.outputPath(entry, ".seg.nrrd") == tmp_path / "a" / "ct.polycl.seg.nrrd"


def test_labelled_folders_for_finetune(tmp_path, ts):
    from PolyCLSegmentWeb.files import DataFolder

    (tmp_path / "ct.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    case = tmp_path / "cases" / "c1"
    case.mkdir(parents=True)
    (case / "image.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    (case / "label.nii.gz").symlink_to(ts / "example_seg_fast" / "liver.nii.gz")
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / "task" / sub).mkdir(parents=True)
        (tmp_path / "task" / sub / "a.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    (tmp_path / "half" / "imagesTr").mkdir(parents=True)  # no labels: not offered
    folder = DataFolder(tmp_path)
    assert folder.listLabelledFolders() == ["cases", "task"]
    assert folder.resolveLabelled("cases") == tmp_path / "cases"
    for bad in ("half", "../" + tmp_path.name, str(tmp_path), "cases/c1", ""):
        with pytest.raises((PermissionError, FileNotFoundError)):
            folder.resolveLabelled(bad)
    # label volumes are not offered as CT to open
    assert {e.name for e in folder.listImages()} == {"ct.nii.gz", "cases/c1/image.nii.gz", "task/imagesTr/a.nii.gz"}
