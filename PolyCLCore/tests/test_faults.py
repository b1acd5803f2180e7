"""Fault injection: bad inputs and failures a user meets get a clear one-line error (exit 2), and
nothing the user has is lost or silently wrong. Each test runs the real command line on real files
(the small TotalSegmentator CT, its DICOM series, its label map) and checks what is left on disk.

The family: output = input (a file, a link, a batch folder that is its own input, refine and
propagate); truncated and corrupt images; DICOM series with a missing or unreadable slice;
unwritable and full outputs; a batch killed while it runs (no partial file; the rerun resumes);
atlas label maps that are not what the default assumes; the existing-output rule; label listings.
The refused web upload with unsaved work is in the Slicer module's browser tests.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from polycl.cli.main import main
from polycl.io import read_volume

UNET = ["--device", "cpu", "--mode", "unet", "--prior", "off"]  # the quickest real Segment


@pytest.fixture
def ct(ts, tmp_path):
    """A private copy of the small CT (30 slices, 3 mm) that a test may try to damage."""
    path = tmp_path / "ct.nii.gz"
    shutil.copyfile(ts / "example_ct_sm.nii.gz", path)
    return path


# ---------------------------------------------------------------- output = input

def test_output_that_is_the_input_is_refused_before_any_work(ct, tmp_path, capsys):
    before = ct.read_bytes()
    link = tmp_path / "link.nii.gz"
    link.symlink_to(ct)
    for out in (ct, link, tmp_path / "sub" / ".." / "ct.nii.gz"):
        assert main(["segment", str(ct), "-o", str(out), "--overwrite", *UNET]) == 2
        assert "would overwrite the input" in capsys.readouterr().err
    mask = tmp_path / "mask.nii.gz"
    shutil.copyfile(ct, mask)
    assert main(["refine", str(ct), str(mask), "-o", str(mask), "--overwrite"]) == 2
    assert main(["propagate", str(ct), str(mask), "-o", str(ct), "--overwrite"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert ct.read_bytes() == before and not (tmp_path / "sub").exists()


def test_batch_output_folder_that_is_its_input_is_refused(ct, tmp_path, capsys):
    folder = ct.parent
    listing = sorted(p.name for p in folder.iterdir())
    assert main(["segment", str(folder), "-o", str(folder), *UNET]) == 2
    assert "the output folder is the input folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == listing


def test_bad_paths_are_answered_before_the_heavy_imports(tmp_path):
    """A missing input or an output under a regular file is refused before torch is imported (the
    cause of a 7-8 s wait for a typo): checked in a fresh interpreter."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = ("import sys; from polycl.cli.main import main; "
            f"a = main(['segment', {str(tmp_path / 'missing.nii.gz')!r}, '-o', {str(tmp_path / 'm.nii.gz')!r}]); "
            f"b = main(['segment', {str(blocker)!r}, '-o', {str(blocker / 'm.nii.gz')!r}]); "
            "print(a, b, 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["2", "2", "False"], run.stderr
    assert "no such file or folder" in run.stderr and "which is a file, not a folder" in run.stderr


# ---------------------------------------------------------------- damaged images

def test_truncated_and_corrupt_images_are_refused(ct, ts, tmp_path, capsys):
    """A cut .nii.gz used to be read as zero-filled (info: 'looks like CT'; segment: a 3 l liver)."""
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(ct.read_bytes()[:100_000])
    raw = tmp_path / "raw.nii"
    sitk.WriteImage(sitk.ReadImage(str(ct)), str(raw))
    half = tmp_path / "half.nii"
    half.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(os.urandom(50_000))
    for bad, message in ((cut, "cut short"), (half, "cut short"), (junk, "cannot be read|damaged")):
        assert main(["info", str(bad)]) == 2
        assert main(["segment", str(bad), "-o", str(tmp_path / "m.nii.gz"), *UNET]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 2 and any(m in err for m in message.split("|"))
        assert not (tmp_path / "m.nii.gz").exists()
    assert read_volume(raw).shape == read_volume(ct).shape  # the whole file still reads


def test_dicom_series_with_a_missing_or_unreadable_slice_is_refused(ts, tmp_path, capsys):
    from polycl.io import dicom_series

    for damage in ("missing", "unreadable"):
        folder = tmp_path / damage
        shutil.copytree(ts / "example_ct_dicom", folder)
        victim = dicom_series(folder)[0]["paths"][10]
        if damage == "missing":
            os.remove(victim)
        else:
            with open(victim, "r+b") as f:
                f.seek(0)
                f.write(os.urandom(1024))  # the DICOM header destroyed
        assert main(["segment", str(folder), "-o", str(tmp_path / f"{damage}.nii.gz"), *UNET]) == 2
        err = capsys.readouterr().err
        assert "gap: 4.00 mm" in err and "2.00 mm apart" in err and "1 slice(s) are missing or unreadable" in err
        assert not (tmp_path / f"{damage}.nii.gz").exists()
    assert read_volume(ts / "example_ct_dicom").shape[0] == 20  # the whole series still reads


# ---------------------------------------------------------------- unwritable, full, killed

def test_unwritable_output_is_refused_before_the_work(ct, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["segment", str(ct), "-o", str(blocker / "out" / "m.nii.gz"), *UNET]) == 2
    assert main(["segment", str(ct.parent), "-o", str(blocker / "out"), *UNET]) == 2
    assert capsys.readouterr().err.count("which is a file, not a folder") == 2
    if os.geteuid() != 0:  # root writes anywhere: the permission check needs an ordinary user
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            assert main(["segment", str(ct), "-o", str(locked / "m.nii.gz"), *UNET]) == 2
            assert "is not writable" in capsys.readouterr().err
        finally:
            locked.chmod(0o755)


def test_existing_outputs_follow_one_rule(ct, tmp_path, capsys):
    """One image or a batch: an existing output is kept (and said so) unless --overwrite."""
    out = tmp_path / "m.nii.gz"
    out.write_bytes(b"my earlier result")
    assert main(["segment", str(ct), "-o", str(out), *UNET]) == 0
    assert "exists, kept (skipped; an existing output is kept (skipped) unless --overwrite" in capsys.readouterr().out
    assert out.read_bytes() == b"my earlier result"
    assert main(["segment", str(ct), "-o", str(out), "--overwrite", *UNET]) == 0
    assert read_volume(out).shape == read_volume(ct).shape


def test_a_full_disk_fails_one_case_and_the_batch_goes_on(ts, tmp_path, capsys, monkeypatch):
    """Writing one case's mask fails with ENOSPC (injected into the image writer): that case is
    'failed', the others are done, report.csv is written and no partial file is left."""
    import errno

    import polycl.io as io

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for name in ("a", "b", "c"):
        (inp / f"{name}.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    real, calls = io.sitk.WriteImage, []

    def write(image, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second case's mask
            with open(path, "wb") as f:
                f.write(b"\0" * 100)  # the first bytes reached the disk, then it was full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(image, path, *args, **kwargs)

    monkeypatch.setattr(io.sitk, "WriteImage", write)
    assert main(["segment", str(inp), "-o", str(out), *UNET]) == 1
    text = capsys.readouterr().out
    assert "b: failed" in text and "No space left on device" in text and "c: done" in text
    rows = {r["case"]: r["status"] for r in csv.DictReader(open(out / "report.csv"))}
    assert rows == {"a": "done", "b": "failed", "c": "done"}
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "c.nii.gz", "report.csv"]


def test_batch_killed_while_running_leaves_complete_files_and_resumes(ts, tmp_path):
    """SIGKILL during a batch (the real command in its own process): every mask left is complete,
    and the rerun skips them, does the rest and removes what a kill in mid-write leaves."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    names = [f"case{i}" for i in range(4)]
    for name in names:
        (inp / f"{name}.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    argv = [sys.executable, "-m", "polycl.cli.main", "segment", str(inp), "-o", str(out), *UNET]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (out / "case0.nii.gz").exists():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in out.glob("*.nii.gz"))
    assert "case0.nii.gz" in done and len(done) < 4, done
    for name in done:
        assert read_volume(out / name).array.any()  # complete masks (a cut file is refused on read)
    (out / ".tmp-killed.nii.gz").write_bytes(b"\x1f\x8b partial")  # what a kill in mid-write leaves
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done)} skipped" in rerun.stdout and f"{4 - len(done)} done" in rerun.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}.nii.gz" for n in names] + ["report.csv"])


# ---------------------------------------------------------------- labels and atlases

@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYCL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_atlas_add_needs_labels_for_a_plain_mask_and_refuses_implausible_organs(ts, tmp_path, home, capsys):
    """A 0/1 liver mask used to be stored as 'spleen' (TotalSegmentator's value 1), and every later
    --target spleen gave the liver. Now it needs --labels; an organ whose volume is implausible is
    refused; `atlas remove` deletes a user atlas."""
    seg = sitk.ReadImage(str(ts / "example_seg_fast_force_split.nii.gz"))
    liver = tmp_path / "liver01.nii.gz"
    sitk.WriteImage(sitk.Cast(seg == 5, sitk.sitkUInt8), str(liver))
    image = str(ts / "example_ct.nii.gz")
    assert main(["atlas", "add", image, str(liver), "--name", "plain"]) == 2
    assert "not a TotalSegmentator label map" in capsys.readouterr().err and not (home / "atlases" / "plain").exists()
    assert main(["atlas", "add", image, str(liver), "--name", "wrong", "--labels", "kidney_left=1"]) == 2
    assert "kidney_left: 1126 ml" in capsys.readouterr().err
    assert main(["atlas", "add", image, str(liver), "--name", "mine", "--labels", "liver=1"]) == 0
    assert main(["atlas", "list"]) == 0 and "mine" in capsys.readouterr().out
    assert main(["atlas", "remove", "mine"]) == 0 and not (home / "atlases" / "mine").exists()
    assert main(["atlas", "remove", "mine"]) == 2 and "no user atlas named 'mine'" in capsys.readouterr().err
    assert main(["atlas", "remove", "totalsegmentator-example"]) == 2


def test_evaluate_and_info_name_the_label_values(ts, tmp_path, capsys):
    seg = ts / "example_seg_fast_force_split.nii.gz"
    liver = tmp_path / "liver01.nii.gz"
    sitk.WriteImage(sitk.Cast(sitk.ReadImage(str(seg)) == 5, sitk.sitkUInt8), str(liver))
    assert main(["evaluate", str(liver), str(seg)]) == 2  # a multi-label reference needs --label
    err = capsys.readouterr().err
    assert "holds several labels" in err and "5 (liver)" in err and "1 (spleen)" in err
    assert main(["evaluate", str(liver), str(liver), "--label", "liver"]) == 2
    assert "it holds 1 (spleen)" in capsys.readouterr().err
    assert main(["evaluate", str(liver), str(seg), "--label", "liver"]) == 0
    assert "Dice:              1.0000" in capsys.readouterr().out
    assert main(["info", str(seg)]) == 0
    out = capsys.readouterr().out
    assert "label map:" in out and "liver" in out and " ml" in out and "NOT CT" not in out


def test_folder_evaluate_lists_unmatched_cases(ts, tmp_path, capsys):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir(), ref.mkdir()
    seg = ts / "example_seg_fast_force_split.nii.gz"
    liver = tmp_path / "liver01.nii.gz"
    sitk.WriteImage(sitk.Cast(sitk.ReadImage(str(seg)) == 5, sitk.sitkUInt8), str(liver))
    for folder, names, mask in ((pred, ("a", "b"), liver), (ref, ("a", "c"), seg)):
        for n in names:
            (folder / f"{n}.nii.gz").symlink_to(mask)
    assert main(["evaluate", str(pred), str(ref), "--label", "liver", "-o", str(tmp_path / "m.csv")]) == 1
    out = capsys.readouterr().out
    assert "a: Dice 1.0000" in out and "b: not scored: no reference" in out and "c: not scored: no prediction" in out
    rows = {r["case"]: r["error"] for r in csv.DictReader(open(tmp_path / "m.csv"))}
    assert rows["a"] == "" and rows["b"].startswith("not scored") and rows["c"].startswith("not scored")


def test_grid_mismatch_names_what_differs_and_the_option(ct, tmp_path, capsys):
    moved = sitk.ReadImage(str(ct))
    moved.SetOrigin(tuple(o + 30.0 for o in moved.GetOrigin()))
    mask = tmp_path / "moved.nii.gz"
    sitk.WriteImage(sitk.Cast(moved > 0, sitk.sitkUInt8), str(mask))
    assert main(["refine", str(ct), str(mask), "-o", str(tmp_path / "r.nii.gz")]) == 2
    assert main(["propagate", str(ct), str(mask), "-o", str(tmp_path / "p.nii.gz"), "--engine", "chain"]) == 2
    err = capsys.readouterr().err
    assert err.count("origin (") == 2 and "--resample-mask" in err and "--resample-seed" in err
    assert "shape" not in err  # only what differs


def test_an_implausible_result_is_flagged_in_the_cli_line_and_the_batch_report(ct, tmp_path, capsys):
    """A result far larger than the organ (here forced: probability threshold 1e-4, every component
    kept, so the "liver" is the whole 10 l grid) is flagged where the user reads it: the CLI line and
    report.csv (the Slicer panel shows the same summary)."""
    forced = ["--threshold", "0.0001", "--no-largest-cc"]
    assert main(["segment", str(ct), "-o", str(tmp_path / "m.nii.gz"), *UNET, *forced]) == 0
    assert "WARNING: check the result" in capsys.readouterr().out
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "case.nii.gz").symlink_to(ct)
    assert main(["segment", str(folder), "-o", str(tmp_path / "out"), *UNET, *forced]) == 0
    assert "WARNING: check the result" in capsys.readouterr().out  # the batch's line for the case
    (row,) = csv.DictReader(open(tmp_path / "out" / "report.csv"))
    assert "more than a liver plausibly holds" in row["detail"]
    assert main(["segment", str(ct), "-o", str(tmp_path / "n.nii.gz"), *UNET]) == 0  # a normal run: no flag
    assert "WARNING" not in capsys.readouterr().out


def test_implausible_volume_is_flagged():
    from polycl.anatomy import volume_warning

    assert "more than a spleen plausibly holds" in volume_warning("spleen", 3000.0)
    assert volume_warning("spleen", 300.0) is None and volume_warning("liver", 150.0) is None  # partial scans
    assert volume_warning("pancreas", 9999.0) is None  # no bounds known: no claim


# ---------------------------------------------------------------- small things a new user saw

def test_models_table_columns_line_up(capsys):
    assert main(["models"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln and not ln.startswith("(")]
    header = lines[0]
    for column in ("kind", "source"):  # (an encoder has no target)
        at = header.index(column)
        for row in lines[1:]:
            assert row[at - 1] == " " and row[at] != " ", (column, row)  # every row's column starts there


def test_a_bar_appears_only_for_work_that_reports(capsys):
    from polycl.progress import terminal

    with terminal("download litemedsam", unit="B"):
        pass  # a bundled file: nothing to download, nothing reported
    assert capsys.readouterr().err == ""
    with terminal("work", unit="slice") as bar:
        bar(1, 2, "half")
    assert "work" in capsys.readouterr().err


def test_segment_progress_only_moves_forward(example_ct):
    """U-Net, atlas prior (registration), then the end: the bar never jumps back (it used to go from
    100 % to 10 % in unet mode) and the registration moves it (it used to sit in a zero-width span)."""
    from polycl import segment

    seen = []
    segment.run(example_ct, "polycl-liver", segment.SegmentOptions(mode="unet", device="cpu", prior="on"),
                progress=lambda done, total, message: seen.append((done / total if total > 0 else 0.0, message)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    during = [f for f, m in seen if "regist" in m.lower()]
    assert during and max(during) > min(during)  # the registration moves the bar
