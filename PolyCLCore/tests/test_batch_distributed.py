"""Distributed batch segmentation: ``torchrun --nproc_per_node 2 -m polycl.cli.main segment IN/ OUT/``
on the CPU (gloo), over real CT from the shared data, against a single-process run.

Five cases, U-Net mode (seconds each; what is tested is the sharding, not the model): two small
(example_ct_sm), two larger (example_ct) and the DICOM series. Sorted names and the round-robin split
put a_small, c_big, e_dicom on rank 0 and b_small, d_big on rank 1.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from polycl.cli.main import main

CASES = ["a_small", "b_small", "c_big", "d_big", "e_dicom"]
RANK_OF = {"a_small": "0", "b_small": "1", "c_big": "0", "d_big": "1", "e_dicom": "0"}


def make_cases(ts, folder: Path) -> Path:
    folder.mkdir()
    for name in ("a_small", "b_small"):
        (folder / f"{name}.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    for name in ("c_big", "d_big"):
        (folder / f"{name}.nii.gz").symlink_to(ts / "example_ct.nii.gz")
    (folder / "e_dicom").symlink_to(ts / "example_ct_dicom", target_is_directory=True)
    return folder


def torchrun(inp: Path, out: Path, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "polycl.cli.main", "segment", str(inp), "-o", str(out), "--mode", "unet", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", start_new_session=True, **popen)


def outputs(out: Path) -> dict[str, Path]:
    return {p.name.split(".")[0]: p for p in out.glob("*.nii.gz") if not p.name.startswith(".tmp-")}


def report(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "report.csv")))


def test_two_ranks_write_each_case_once_identical_to_one_process(ts, tmp_path, capsys):
    inp = make_cases(ts, tmp_path / "in")
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(["segment", str(inp), "-o", str(single), "--mode", "unet", "--device", "cpu"]) == 0
    proc = torchrun(inp, multi)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    # each case segmented exactly once, by the rank the split gives it
    done_lines = [line for line in stdout.splitlines() if ": done" in line]
    assert sorted(line.split("] ")[-1].split(":")[0] for line in done_lines) == CASES
    assert stdout.count("summary: 5 done, 0 skipped, 0 failed on 2 ranks") == 1  # rank 0 only
    rows = report(multi)
    assert [r["case"] for r in rows] == CASES and all(r["status"] == "done" for r in rows)
    assert {r["case"]: r["rank"] for r in rows} == RANK_OF
    assert sorted(p.name for p in multi.iterdir()) == sorted([f"{c}.nii.gz" for c in CASES] + ["report.csv"])
    # bit for bit what one process writes
    for case, path in outputs(single).items():
        assert path.read_bytes() == (multi / path.name).read_bytes(), case


def test_killed_rank_leaves_complete_outputs_and_rerun_finishes(ts, tmp_path):
    from polycl.io import read_volume

    inp = make_cases(ts, tmp_path / "in")
    out = tmp_path / "out"
    proc = torchrun(inp, out)
    deadline = time.time() + 300
    while not outputs(out) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    first = outputs(out)
    assert first, "no case finished before the deadline"
    # SIGKILL rank 1's worker (the process whose environment says RANK=1), as a crashed node would
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    rank1 = [int(p) for p in workers if b"RANK=1" in Path(f"/proc/{p}/environ").read_bytes().split(b"\0")]
    assert rank1, "rank 1's worker was not found"
    os.kill(rank1[0], signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0  # torchrun reports the failed worker and stops the other
    survived = outputs(out)
    assert set(survived) < set(CASES), "the run finished before the kill: no partial state was tested"
    for path in survived.values():  # every file that exists is a complete, readable mask
        assert read_volume(path).array.any()
    stamps = {case: p.stat().st_mtime_ns for case, p in survived.items()}

    rerun = torchrun(inp, out)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-3000:]
    assert set(outputs(out)) == set(CASES)
    for case, stamp in stamps.items():  # finished cases are not rewritten
        assert (out / f"{case}.nii.gz").stat().st_mtime_ns == stamp
    rows = {r["case"]: r["status"] for r in report(out)}
    assert rows == {c: ("skipped" if c in stamps else "done") for c in CASES}
    assert not list(out.glob("report.rank*.csv"))
