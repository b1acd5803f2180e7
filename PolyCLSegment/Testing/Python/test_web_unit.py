"""The web front end's rules that need no browser: access policy, data-folder confinement, and that
the page reaches polycl only through the module's Logic (PolyCLSegment/PolyCLSegmentWeb, issue 12)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
WEB = ROOT / "PolyCLSegment" / "PolyCLSegmentWeb"


def test_web_package_imports_no_polycl_module():
    """PolyCLSegmentLogic (and the module's PolyCLSegmentLib helpers) is the only path to polycl."""
    offenders = []
    files = sorted(WEB.rglob("*.py"))
    assert files, "no web package"
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
            offenders += [f"{path.name}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "polycl"]
    assert not offenders, offenders


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
