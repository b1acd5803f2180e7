"""A scan too thin to place on the atlas (the dcmqi 3-slice CT, 2.4 mm) gets a clear error from the
registration, not SimpleITK's; Segment under ``--prior auto`` keeps the U-Net's mask and says why, and
``--prior on`` is refused with that message before anything is written."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def three_slices(data):
    from polycl.io import read_volume

    return read_volume(data / "dcmqi" / "ct-3slice")


def test_a_three_slice_scan_is_refused_by_the_registration(three_slices):
    from polycl.atlas.registration import register
    from polycl.atlas.store import bundled_atlas
    from polycl.errors import InputError

    with pytest.raises(InputError, match="too thin to place on the atlas"):
        register(three_slices, bundled_atlas().image)


def test_auto_skips_the_prior_on_a_thin_scan_and_on_refuses_it(three_slices, data, tmp_path, capsys):
    from polycl.atlas.targets import apply_prior
    from polycl.cli.main import main
    from polycl.errors import InputError

    class LiverUnet:  # what the prior reads of a loaded U-Net
        target = "liver"

    coarse = np.zeros(three_slices.shape, np.uint8)
    coarse[1, 200:260, 200:260] = 1  # a 'liver' of 1.5 ml: implausible, so 'auto' asks for the prior
    out = apply_prior(three_slices, three_slices.array, coarse, LiverUnet(), "auto")
    assert np.array_equal(out.coarse, coarse)  # the U-Net's mask, unchanged
    assert [s["source"] for s in out.sources] == ["unet"] and "too thin" in out.sources[0]["note"]
    with pytest.raises(InputError, match="too thin to place on the atlas"):
        apply_prior(three_slices, three_slices.array, coarse, LiverUnet(), "on")
    target = tmp_path / "spleen.nii.gz"
    assert main(["segment", str(data / "dcmqi" / "ct-3slice"), "-o", str(target), "--target", "spleen"]) == 2
    assert "too thin to place on the atlas" in capsys.readouterr().err and not target.exists()
