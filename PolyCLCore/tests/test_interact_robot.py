"""The robot user (polycl.interact.robot) and ``polycl evaluate-interactive``.

The click rules are checked on small synthetic masks (pure geometry, no SAM); the command runs
for real on a 5-slice slab of example_ct (5 LiteMedSAM embeddings) with at most 2 clicks.
"""

from __future__ import annotations

import re

import numpy as np

from polycl.interact.robot import RobotResult, first_clicks, next_click


def test_first_clicks_one_per_object_at_the_centre():
    gt = np.zeros((5, 40, 60), bool)
    gt[1:4, 5:25, 5:25] = True      # object 1: largest slice 1 (all equal: the first), centre (15, 15)
    gt[2:4, 10:22, 40:52] = True    # object 2: slices 2..3
    gt[2, 30, 30] = True            # a speck under 10 % of the largest object: not an object
    clicks = first_clicks(gt, (1.0, 1.0))
    assert len(clicks) == 2
    z, y, x = clicks[0]
    assert z == 1 and abs(y - 14.5) <= 0.5 and abs(x - 14.5) <= 0.5
    assert clicks[1][0] == 2 and 40 <= clicks[1][2] < 52


def test_next_click_on_the_largest_error():
    gt = np.zeros((3, 40, 40), bool)
    gt[:, 10:30, 10:30] = True
    pred = gt.copy()
    pred[1, 10:30, 10:16] = False           # a miss of 120 px on slice 1
    pred[2, 0:5, 0:5] = True                # a leak of 25 px on slice 2
    (z, y, x), include = next_click(pred, gt, (1.0, 1.0))
    assert (z, include) == (1, True) and 10 <= x < 16
    pred[1] = gt[1]
    (z, y, x), include = next_click(pred, gt, (1.0, 1.0))
    assert (z, include) == (2, False) and y < 5 and x < 5
    assert next_click(gt, gt, (1.0, 1.0)) is None


def test_noc_is_capped_and_summary_format():
    r = RobotResult(dice=[0.8, 0.91, 0.93], seconds=[1.0, 2.0, 3.0], max_clicks=20)
    assert r.noc(0.90) == 2 and r.noc(0.95) == 20
    assert r.dice_at(5) == 0.93 and len(r.curve()) == 20
    assert r.summary() == "NoC90=2 NoC95=20 dice@1=0.800 dice@5=0.930 seconds_per_click=2.00"


def test_evaluate_interactive_cli_prints_the_summary(example_ct, ts, tmp_path, capsys):
    from polycl.cli.main import main
    from polycl.io import read_label
    from polycl.volume import Volume

    labels = read_label(ts / "example_seg_fast_force_split.nii.gz")
    liver = labels.array == 5
    z = int(np.argmax(liver.reshape(liver.shape[0], -1).sum(axis=1)))
    img, lab = tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz"
    import SimpleITK as sitk

    sitk.WriteImage(example_ct.to_sitk()[:, :, z - 2:z + 3], str(img))
    sitk.WriteImage(Volume(labels.array.astype(np.uint8), labels.geometry).to_sitk()[:, :, z - 2:z + 3], str(lab))
    csv = tmp_path / "curve.csv"
    assert main(["evaluate-interactive", str(img), str(lab), "--label", "liver", "--max-clicks", "2",
                 "--engine", "chain", "--device", "cpu", "--csv", str(csv)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    m = re.fullmatch(r"NoC90=(\d+) NoC95=(\d+) dice@1=([\d.]+) dice@5=([\d.]+) seconds_per_click=([\d.]+)", out[-1])
    assert m, out[-1]
    assert float(m.group(3)) >= 0.85  # one click + propagation through 5 liver slices
    assert csv.read_text().startswith("click,kind,z,y,x,dice,seconds,answer_seconds")
    assert main(["evaluate-interactive", str(img), str(lab), "--label", "250"]) == 2  # no such label (ids end at 117): an error
    assert "not present" in capsys.readouterr().err
