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
    # a target never reached reads as not reached; dice@5 only once five clicks were made
    assert r.summary() == "NoC90=2 NoC95=>3 dice@1=0.800 seconds_per_click=2.00"
    r = RobotResult(dice=[0.5, 0.6, 0.7, 0.8, 0.96], seconds=[1.0] * 5, max_clicks=20)
    assert r.summary() == "NoC90=5 NoC95=5 dice@1=0.500 dice@5=0.960 seconds_per_click=1.00"


def test_challenge_box_and_scores():
    from polycl.interact.robot import BoxProtocolResult, challenge_boxes

    gt = np.zeros((9, 40, 60), bool)
    gt[1:6, 5:20, 5:20] = True
    gt[3, 4:25, 5:22] = True          # the largest slice of object 1
    gt[4:8, 10:20, 40:50] = True      # object 2
    boxes = challenge_boxes(gt)
    assert boxes[0] == (1, 5, 3, 4, 5, 24, 21)
    assert boxes[1][:2] == (4, 7) and boxes[1][3:] == (10, 40, 19, 49)
    r = BoxProtocolResult(dsc=[0.5, 0.6, 0.7, 0.8, 0.9, 1.0], nsd=[0.1] * 6, seconds=[1.0] * 6)
    # the challenge's AUC: trapezoids over the last 5 steps at x = 0..4
    assert abs(r.dsc_auc - (0.6 / 2 + 0.7 + 0.8 + 0.9 + 1.0 / 2)) < 1e-9
    assert abs(r.nsd_auc - 0.4) < 1e-9 and r.final_dsc == 1.0
    assert r.summary().startswith("DSC_AUC=3.200 NSD_AUC=0.400 final_DSC=1.000 final_NSD=0.100 box_DSC=0.500")


def test_surface_dice_tolerance():
    from polycl.evaluate import surface_dice

    a = np.zeros((20, 40, 40), bool)
    a[5:15, 10:30, 10:30] = True
    b = np.roll(a, 1, axis=2)  # one 1 mm voxel off
    assert surface_dice(a, a, (1.0, 1.0, 1.0)) == 1.0
    assert surface_dice(a, b, (1.0, 1.0, 1.0), tolerance_mm=2.0) == 1.0
    assert surface_dice(a, b, (1.0, 1.0, 5.0), tolerance_mm=2.0) < 0.9  # 5 mm: the faces across the shift miss
    assert surface_dice(a, np.zeros_like(a), (1.0, 1.0, 1.0)) == 0.0


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
    m = re.fullmatch(r"NoC90=(>?\d+) NoC95=(>?\d+) dice@1=([\d.]+) seconds_per_click=([\d.]+)", out[-1])
    assert m, out[-1]
    assert float(m.group(3)) >= 0.85  # one click + propagation through 5 liver slices
    assert csv.read_text().startswith("click,kind,z,y,x,dice,seconds,answer_seconds")
    assert main(["evaluate-interactive", str(img), str(lab), "--label", "250"]) == 2  # no such label (ids end at 117): an error
    assert "not present" in capsys.readouterr().err
    assert main(["evaluate-interactive", str(img), str(lab), "--label", "liver", "--protocol", "box",
                 "--max-clicks", "1", "--engine", "chain", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("step 1 box") and out[1].startswith("step 2 ")
    m = re.fullmatch(r"DSC_AUC=([\d.]+) NSD_AUC=([\d.]+) final_DSC=([\d.]+) final_NSD=([\d.]+) box_DSC=([\d.]+) "
                     r"seconds_per_interaction=([\d.]+)", out[-1])
    assert m, out[-1]
    assert float(m.group(5)) >= 0.85  # the box on the largest slice + propagation through 5 liver slices
