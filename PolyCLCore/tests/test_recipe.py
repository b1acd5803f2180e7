"""The generalisation recipe's parts: in-plane spacing normalisation (preprocess <-> inverse),
strong augmentation, named validation cases, and a model trained with them segmenting real CT."""

import pytest
import torch

from polycl.errors import InputError
from polycl.finetune import FinetuneConfig, augmentations, finetune
from polycl.preprocess import PreprocessConfig, from_model_grid, to_model_grid


def test_spacing_normalisation_shows_organs_at_their_physical_size_and_inverts():
    cfg = PreprocessConfig(size=64, pixel_mm=4.0)
    # a 40 mm square in a 512 px slice at 0.5 mm and in a 128 px slice at 2 mm: the same 10 px on the model grid
    for n, mm in ((512, 0.5), (128, 2.0)):
        s = torch.zeros(1, 1, n, n)
        c, half = n // 2, int(20 / mm)
        s[..., c - half:c + half, c - half:c + half] = 1
        grid = to_model_grid(s, cfg, (mm, mm), mode="nearest")
        assert grid.shape == (1, 1, 64, 64)
        assert int(grid.sum()) == pytest.approx(100, abs=25)
        back = from_model_grid(grid, cfg, (mm, mm), (n, n))
        assert back.shape == s.shape and ((back > 0.5) == (s > 0)).float().mean() > 0.99
    # a field of view larger than size * pixel_mm is centre-cropped, and the crop comes back empty
    wide = torch.ones(1, 1, 100, 100)
    grid = to_model_grid(wide, cfg, (4.0, 6.0))  # 400 x 600 mm -> 100 x 150 px -> cropped to 64
    back = from_model_grid(grid, cfg, (4.0, 6.0), (100, 100))
    assert back[..., 50, 50] == 1 and back[..., 50, 0] == 0 and back[..., 0, 50] == 0
    # without pixel_mm it is the paper's plain resize
    assert to_model_grid(wide, PreprocessConfig(size=32), (4.0, 6.0)).shape == (1, 1, 32, 32)


def test_strong_augmentation_keeps_image_and_label_aligned():
    t = augmentations("strong", 64)
    t.set_random_state(0)
    img = torch.zeros(1, 64, 64)
    img[:, 20:40, 24:44] = 0.8
    changed = 0
    for _ in range(20):
        out = t({"image": img.clone(), "label": (img > 0).float()})
        lab = torch.as_tensor(out["label"]) > 0.5
        im = torch.as_tensor(out["image"])
        assert lab.shape == (1, 64, 64) and set(torch.unique(torch.as_tensor(out["label"])).tolist()) <= {0.0, 1.0}
        if lab.any() and (~lab).any():  # the label still marks the bright square: inside brighter than outside
            assert im[lab].mean() > im[~lab].mean() + 0.3
        changed += not torch.equal(im, img)
    assert changed >= 15
    with pytest.raises(InputError, match="unknown augmentation"):
        augmentations("wild", 64)


@pytest.fixture()
def two_cases(tmp_path, ts):
    root = tmp_path / "cases"
    for name, image, label in (("ct", "example_ct.nii.gz", "example_seg_fast_force_split.nii.gz"),
                               ("dicom", "example_ct_dicom", "example_seg_dicom.nii.gz")):
        (root / name).mkdir(parents=True)
        (root / name / ("image" if image == "example_ct_dicom" else "image.nii.gz")).symlink_to(ts / image)
        (root / name / "label.nii.gz").symlink_to(ts / label)
    return root


def test_named_validation_case_and_spacing_normalised_model_segments(two_cases, tmp_path, dicom_ct):
    from polycl.inference import load_model
    from polycl.segment import SegmentOptions, run

    cfg = FinetuneConfig(target="liver", size=48, pixel_mm=10.0, augmentation="strong", epochs=1, batch_size=8,
                         features=(8, 16, 32), device="cpu", val_cases=("dicom",), keep="last")
    result = finetune(two_cases, tmp_path / "m", cfg)
    assert result.train_cases == ["ct"] and result.val_cases == ["dicom"]
    model = load_model(str(tmp_path / "m" / "model.pt"), "cpu")
    assert model.preprocess.pixel_mm == 10.0 and model.preprocess.size == 48
    mask = run(dicom_ct, model, SegmentOptions(mode="unet", prior="off")).mask
    assert mask.shape == dicom_ct.shape  # back on the 512 x 512 grid through the inverse of the normalisation
    with pytest.raises(InputError, match="not in"):
        finetune(two_cases, tmp_path / "x", FinetuneConfig(val_cases=("nope",), epochs=1))
    with pytest.raises(InputError, match="leave at least one"):
        finetune(two_cases, tmp_path / "y", FinetuneConfig(val_cases=("ct", "dicom"), epochs=1))
    with pytest.raises(InputError, match="pixel size must be positive"):
        finetune(two_cases, tmp_path / "z", FinetuneConfig(pixel_mm=0.0, epochs=1))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
