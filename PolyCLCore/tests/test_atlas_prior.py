"""Atlas location prior: registration mechanics and the prior against U-Net components.

MECHANICS ONLY: the bundled atlas IS example_ct (downsampled). Here it is registered onto a smoothly
deformed (random B-spline, ~6 mm per control point), shifted copy of example_ct resampled to 0.8 mm in
plane (3 mm slices, cropped in z to the kidneys to bound the time). This checks that the registration
recovers a known deformation, not that it generalises to other patients (see test_atlas_spleen.py for
that: a different scan).
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import dice

KIDNEYS = {"kidney_right": 2, "kidney_left": 3}


@pytest.fixture(scope="module")
def deformed(ts):
    """(Volume, label array): example_ct and its class map through the same shift + B-spline warp."""
    from polycl.volume import Volume

    ct = sitk.ReadImage(str(ts / "example_ct.nii.gz"), sitk.sitkFloat32)
    seg = sitk.ReadImage(str(ts / "example_seg_fast_force_split.nii.gz"))
    warp = sitk.BSplineTransformInitializer(ct, [4, 4, 4])
    n = len(warp.GetParameters())
    warp.SetParameters(tuple(np.random.default_rng(0).normal(0.0, 6.0, n)))
    move = sitk.CompositeTransform(3)
    move.AddTransform(sitk.TranslationTransform(3, (12.0, -9.0, 15.0)))
    move.AddTransform(warp)
    z = np.flatnonzero(np.isin(sitk.GetArrayFromImage(seg), list(KIDNEYS.values())).any(axis=(1, 2)))
    z0, z1 = int(z[0]) - 5, int(z[-1]) + 6
    ref = sitk.Image([int(122 * 3 / 0.8), int(101 * 3 / 0.8), z1 - z0], sitk.sitkInt16)
    ref.SetSpacing((0.8, 0.8, 3.0))
    ref.SetDirection(ct.GetDirection())
    ref.SetOrigin(ct.TransformIndexToPhysicalPoint((0, 0, z0)))
    field = sitk.DisplacementFieldTransform(sitk.TransformToDisplacementField(  # the warp as a 2.4 mm field: fast
        move, sitk.sitkVectorFloat64, [int(122 * 3 / 2.4), int(101 * 3 / 2.4), z1 - z0], ref.GetOrigin(),
        (2.4, 2.4, 3.0), ref.GetDirection()))
    image = sitk.Cast(sitk.Resample(ct, ref, field, sitk.sitkLinear, -1024.0), sitk.sitkInt16)
    label = sitk.Resample(seg, ref, field, sitk.sitkNearestNeighbor, 0)
    return Volume.from_sitk(image, "deformed example_ct"), sitk.GetArrayFromImage(label)


@pytest.fixture(scope="module")
def prior(deformed):
    from polycl.atlas.prior import compute_prior

    volume, _ = deformed
    calls = []
    pr = compute_prior(volume, tuple(KIDNEYS), progress=lambda d, t, m: calls.append((d, t, m)))
    return pr, calls


def test_kidneys_located_on_a_deformed_copy_of_the_atlas_scan(deformed, prior):
    """Mechanics: warped kidney masks reach Dice >= 0.85 (measured 0.96 / 0.95) against the equally
    deformed label; progress was reported."""
    _, label = deformed
    pr, calls = prior
    assert pr.atlases == ["totalsegmentator-example"]
    for organ, value in KIDNEYS.items():
        assert pr.probability[organ].dtype == np.uint8 and pr.probability[organ].shape == label.shape
        assert dice(pr.mask(organ), label == value) >= 0.85, organ
    assert calls and any("affine" in m for _, _, m in calls)


def test_registration_is_reused_for_the_same_ct_atlases_and_options(deformed, prior):
    """Segment twice on one CT (kidneys, then another organ): the second prior reuses the registration
    (the very same transform, no new registration); other options or another atlas set register anew."""
    from dataclasses import replace

    from polycl.atlas import cache
    from polycl.atlas.prior import compute_prior
    from polycl.atlas.registration import RegistrationOptions
    from polycl.atlas.store import bundled_atlas

    volume, _ = deformed
    first, _ = prior
    again = compute_prior(volume.with_array(volume.array.copy()), ("kidney_left",))  # an equal copy of the CT
    assert again.cached and not first.cached
    assert again.registrations[0] is first.registrations[0]
    assert np.array_equal(again.probability["kidney_left"], first.probability["kidney_left"])
    cheap = RegistrationOptions(z_candidates=1, affine_iterations=2, bspline_iterations=0)
    misses = cache.info()["misses"]
    other_options = compute_prior(volume, ("kidney_left",), options=cheap)
    atlas = bundled_atlas()
    other_set = compute_prior(volume, ("kidney_left",), options=cheap,
                              atlases=[replace(atlas, image=atlas.image.with_array(atlas.image.array + 1))])
    assert not other_options.cached and not other_set.cached and cache.info()["misses"] == misses + 2
    assert other_options.registrations[0] is not first.registrations[0]
    assert cache.info()["entries"] <= cache.MAX_ENTRIES


def test_unet_components_are_filtered_by_the_prior(deformed, prior):
    """A 'kidney' U-Net mask holding the right kidney, the liver and the spleen (wrong organs): the right
    kidney is kept as the U-Net drew it ('both'), liver and spleen are not taken for any kidney, the left kidney comes
    from the prior; a component with fat HU inside the prior is implausible and dropped."""
    from polycl.atlas.prior import combine

    volume, label = deformed
    pr, _ = prior
    voxel_ml = 0.8 * 0.8 * 3.0 / 1000.0
    from scipy.ndimage import binary_dilation

    apart = ~binary_dilation(label == 2, iterations=5)  # liver and right kidney touch: keep them two pieces
    unet = ((label == 2) | ((label == 5) & apart) | (label == 1)).astype(np.uint8)
    masks = {o: pr.mask(o) for o in KIDNEYS}
    kept, sources = combine(unet, masks, volume.array, voxel_ml)
    assert [(s.organ, s.source) for s in sources] == [("kidney_right", "both"), ("kidney_left", "prior")]
    assert np.array_equal(kept[0], label == 2)
    assert not np.any(kept[1] & ((label == 5) | (label == 1))) and dice(kept[1], label == 3) >= 0.85

    fat = np.full_like(volume.array, -100)  # the same masks on a CT of fat: nothing is plausible
    kept, sources = combine(unet, masks, fat, voxel_ml)
    assert kept == [] and sources == []
    hu = volume.array.copy()
    hu[label == 2] = -100  # the right kidney turned to fat: neither the U-Net piece nor the prior there is kept
    kept, sources = combine(unet, masks, hu, voxel_ml)
    assert [(s.organ, s.source, s.dropped) for s in sources] == [("kidney_left", "prior", 0)]


def test_registration_cancel_and_bad_input(example_ct):
    """Cancel inside the optimizer raises Cancelled; a 2D image is refused with a clear error."""
    from polycl.atlas.registration import register
    from polycl.atlas.store import bundled_atlas
    from polycl.errors import Cancelled, InputError
    from polycl.progress import CancelToken
    from polycl.volume import Volume

    token = CancelToken()

    def progress(done, total, message):
        if "affine" in message:
            token.cancel()

    with pytest.raises(Cancelled):
        register(example_ct, bundled_atlas().image, progress=progress, cancel=token)
    with pytest.raises(InputError, match="3D"):
        register(Volume(example_ct.array[:1], example_ct.geometry), bundled_atlas().image)
