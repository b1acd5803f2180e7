"""Registration of a CT to an atlas with SimpleITK, at low resolution.

The input CT is the fixed image, the atlas CT the moving one, so the result maps points of the
input into the atlas and the atlas's labels can be resampled onto the input's grid. Steps
(:func:`register`), all on copies smoothed and resampled to about the atlas's spacing (``spacing_mm``):

1. *Initialisation*: x/y from SimpleITK's ``CenteredTransformInitializer`` on the two body masks (HU >
   -500, largest component, so the table is ignored) with ``MOMENTS``, which lines up their centres of
   mass; z by a search over every placement of the input's z-range inside the atlas's (step
   ``z_step_mm``), scored by Mattes mutual information inside the input's body: a 20-slice slab of the
   upper abdomen lands at the upper abdomen. The initializer's own z (the bodies' centres of mass lined
   up) is not used, since a scan seldom covers the stretch of body the atlas does, nor ``GEOMETRY`` (the
   grids' centres), since a field of view is not centred on the body: mean prior Dice over 10 organs of
   three scans 0.13 and 0.38 (the DICOM series missed: 0.00) against 0.54 (docs/evaluation.md, "Atlas
   prior").
2. *Affine* from the best placements (``z_candidates``), Mattes MI inside the body mask, two levels;
   a slab thinner than ``thin_mm`` gets a similarity transform instead (its z scaling is not defined
   by so few slices). The placement with the best final metric is kept.
3. *Deformable*: a B-spline with a coarse control grid (``bspline_mm`` between nodes), L-BFGS-B.

Cost (2 cores, 512 x 512 x 120 CT, ``benchmarks/stages/registration.py``; docs/benchmarks.md has the
rows): about 11 s on the idle machine, the B-spline step ~80 % of it (its metric costs samples x control
points per evaluation, so it is bounded by ``bspline_evaluations``), the full-resolution smoothing most
of the rest. Faster settings lose accuracy (docs/benchmarks.md, "Atlas registration"): 10 iterations
/ 15 evaluations, or a bin average before the smoothing, keep the mean prior Dice but lose the
end-to-end spleen on the DICOM series. Progress and cancel follow
:mod:`polycl.progress` (checked between optimizer iterations). :mod:`polycl.atlas.cache` keeps the result
for a CT seen again in the same process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from polycl.errors import InputError
from polycl.progress import CancelToken, Progress, Reporter
from polycl.volume import Volume

BODY_HU = -500.0
#: The thinnest scan placed on an atlas: SimpleITK's smoothing needs 4 voxels per axis, and a few mm of
#: anatomy cannot be placed along the body (a 3-slice scan gets no prior: a clear error, 'auto' skips it).
MIN_SLICES, MIN_EXTENT_MM = 4, 20.0
#: HU range the registration sees: soft tissue gets most of the histogram bins, bone and air saturate.
CLIP_HU = (-300.0, 400.0)


@dataclass
class RegistrationOptions:
    """Low-resolution grid (``spacing_mm``), z search step, affine and B-spline settings (mm)."""

    spacing_mm: float = 6.0
    z_step_mm: float = 12.0
    z_candidates: int = 3
    thin_mm: float = 120.0
    affine_iterations: int = 80
    bspline_mm: float = 80.0
    bspline_iterations: int = 20
    bspline_evaluations: int = 30  # metric evaluations, line searches included: bounds the time
    sampling: float = 0.25
    bspline_sampling: float = 0.25
    seed: int = 7


@dataclass
class Registration:
    """``transform`` maps input (fixed) points to atlas points; ``grid``: the low-resolution image of
    the input it was computed on (its geometry is where the warped prior is evaluated first);
    ``metric``: final Mattes MI (lower is better); ``steps``: what ran, for the report; ``seconds``:
    wall time per step (resample, z_search, affine, bspline)."""

    transform: sitk.Transform
    grid: sitk.Image
    metric: float
    steps: list
    seconds: dict = field(default_factory=dict)


def low_res(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``image`` (float HU) smoothed and resampled onto an axis-aligned (identity direction) grid of about
    ``spacing_mm`` covering it; z spacing is finer for thin scans (at least 8 slices when possible)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    size = np.asarray(image.GetSize())
    spacing = np.asarray(image.GetSpacing())
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    corners = np.array([[i, j, k] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    pts = np.asarray(image.GetOrigin()) + (corners * spacing) @ d.T
    lo, hi = pts.min(0), pts.max(0)
    extent = hi - lo
    sz = min(spacing_mm, max(float(np.min(spacing)), extent[2] / 8.0))
    new_spacing = np.array([spacing_mm, spacing_mm, sz], dtype=float)
    sigma = [max(0.0, (t - s) / 2.0) for t, s in zip(new_spacing, np.abs(d.T @ spacing))]
    if max(sigma) > 0:
        image = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigma])
    ref = sitk.Image([int(np.floor(e / s)) + 1 for e, s in zip(extent, new_spacing)], sitk.sitkFloat32)
    ref.SetOrigin(tuple(lo))
    ref.SetSpacing(tuple(new_spacing))
    return sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, -1024.0)


def body_mask(image: sitk.Image) -> sitk.Image:
    """The largest connected region above -500 HU, holes filled slice-wise by a closing (uint8)."""
    mask = sitk.BinaryThreshold(image, BODY_HU, 1e6, 1, 0)
    mask = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True) == 1
    return sitk.BinaryMorphologicalClosing(mask, [2, 2, 1])


def centred(fixed_mask: sitk.Image, moving_mask: sitk.Image) -> sitk.Euler3DTransform:
    """``sitk.CenteredTransformInitializer`` on the body masks (``MOMENTS``): centre = the input's body
    centre of mass, translation = the atlas's body centre of mass minus the input's."""
    try:
        return sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
            fixed_mask, moving_mask, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS))
    except RuntimeError as exc:  # ITK: "Total Mass of the image was zero"
        raise InputError("no body found in the image (nothing above -500 HU): is it CT?") from exc


def _extent_z(image: sitk.Image) -> tuple[float, float]:
    z0 = image.GetOrigin()[2]
    return z0, z0 + (image.GetSize()[2] - 1) * image.GetSpacing()[2]


def _method(fixed_mask: sitk.Image, options: RegistrationOptions, report: Reporter | None, what: str = "",
            iterations: int = 1, levels: int = 1) -> sitk.ImageRegistrationMethod:
    """Mattes MI inside the input's body; ``report`` sees each optimizer iteration (and may cancel there),
    counted over the ``levels`` resolution levels of at most ``iterations`` each (the optimizer's own
    count starts again at each level: the bar would go back)."""
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(options.sampling, options.seed)
    r.SetMetricFixedMask(fixed_mask)
    r.SetInterpolator(sitk.sitkLinear)
    if report is not None:
        total, count = iterations * levels, [0]

        def iteration():
            count[0] += 1
            report(min(count[0], total), total, f"registration: {what}")

        r.AddCommand(sitk.sitkIterationEvent, iteration)
    return r


def _execute(r: sitk.ImageRegistrationMethod, fixed, moving, report: Reporter) -> None:
    """``r.Execute``; a cancel raised inside an iteration callback reaches Python as a RuntimeError from
    SimpleITK, turned back into :class:`~polycl.errors.Cancelled` here."""
    try:
        r.Execute(fixed, moving)
    except RuntimeError:
        report.check()
        raise


def z_search(fixed: sitk.Image, moving: sitk.Image, fixed_mask: sitk.Image, start: sitk.Euler3DTransform,
             options: RegistrationOptions,
             report: Reporter) -> list[tuple[float, np.ndarray]]:
    """(metric, translation) of every z placement of the input inside the atlas, best first; x/y from
    ``start`` (:func:`centred`)."""
    tx, ty, _ = start.GetTranslation()
    f0, f1 = _extent_z(fixed)
    m0, m1 = _extent_z(moving)
    lo, hi = sorted((m0 - f0, m1 - f1))  # input inside the atlas, or the atlas inside a longer input
    shifts = np.arange(lo, hi + options.z_step_mm / 2, options.z_step_mm) if hi > lo else np.array([lo])
    r = _method(fixed_mask, options, None)
    r.SetMetricSamplingStrategy(r.NONE)
    scored = []
    for i, tz in enumerate(shifts):
        t = np.array([tx, ty, tz])
        r.SetInitialTransform(sitk.TranslationTransform(3, tuple(t)))
        try:
            scored.append((float(r.MetricEvaluate(fixed, moving)), t))
        except RuntimeError:  # too few overlapping samples at this placement
            continue
        report(i + 1, len(shifts), "registration: placing the scan along the atlas")
    if not scored:
        raise InputError("the scan could not be placed on the atlas (no overlap at any z position)")
    return _peaks(scored, 3 * options.z_step_mm)


def _peaks(scored: list, min_gap_mm: float) -> list:
    """``scored`` best first, keeping only placements at least ``min_gap_mm`` in z from a better one, so
    the candidates tried by the affine step are distinct modes (e.g. upper abdomen vs pelvis)."""
    kept = []
    for s in sorted(scored, key=lambda s: s[0]):
        if all(abs(s[1][2] - k[1][2]) >= min_gap_mm for k in kept):
            kept.append(s)
    return kept


def _affine(fixed, moving, fixed_mask, centre, start: np.ndarray, thin: bool, options, report: Reporter):
    t = sitk.Similarity3DTransform() if thin else sitk.AffineTransform(3)
    t.SetCenter(tuple(centre))
    t.SetTranslation(tuple(start))
    r = _method(fixed_mask, options, report, "affine", options.affine_iterations, levels=2)
    r.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=0.01,
                                               numberOfIterations=options.affine_iterations,
                                               gradientMagnitudeTolerance=1e-6)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel([2, 1])
    r.SetSmoothingSigmasPerLevel([1.0, 0.0])
    r.SetInitialTransform(t, inPlace=True)
    _execute(r, fixed, moving, report)
    return t, float(r.GetMetricValue())


def _bspline(fixed, moving, fixed_mask, affine: sitk.Transform, options, report: Reporter):
    extent = [(n - 1) * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]
    mesh = [max(1, round(e / options.bspline_mm)) for e in extent]
    b = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    r = _method(fixed_mask, options, report, "B-spline", options.bspline_iterations)
    r.SetMetricSamplingPercentage(options.bspline_sampling, options.seed)
    r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=options.bspline_iterations,
                           maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=options.bspline_evaluations)
    r.SetMovingInitialTransform(affine)
    r.SetInitialTransform(b, inPlace=True)
    _execute(r, fixed, moving, report)
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine)
    composite.AddTransform(b)
    return composite, float(r.GetMetricValue()), mesh


def register(volume: Volume, atlas_image: Volume, options: RegistrationOptions | None = None, *,
             progress: Progress | None = None, cancel: CancelToken | None = None) -> Registration:
    """Register ``volume`` (CT, HU, any orientation) to ``atlas_image`` (see the module docstring)."""
    opts = options or RegistrationOptions()
    report = Reporter(progress, cancel, cancelled_message="registration cancelled; nothing was changed")
    if volume.array.ndim != 3 or min(volume.shape) < 2:
        raise InputError(f"registration needs a 3D volume, got shape {volume.shape}")
    extent_mm = volume.shape[0] * volume.geometry.spacing[2]
    if min(volume.shape) < MIN_SLICES or extent_mm < MIN_EXTENT_MM:
        raise InputError(f"the scan is too thin to place on the atlas ({volume.shape[0]} slices, {extent_mm:.0f} mm; "
                         f"at least {MIN_SLICES} slices and {MIN_EXTENT_MM:.0f} mm are needed)")
    clock = time.perf_counter()

    seconds = {}

    def lap(step: str) -> float:
        nonlocal clock
        now = time.perf_counter()
        seconds[step], clock = now - clock, now
        return seconds[step]

    report(0, 1, "registration: resampling")
    fixed = low_res(volume.to_sitk(), opts.spacing_mm)
    moving = low_res(atlas_image.to_sitk(), opts.spacing_mm)
    fixed_mask, moving_mask = body_mask(fixed), body_mask(moving)
    fixed, moving = (sitk.Clamp(i, sitk.sitkFloat32, *CLIP_HU) for i in (fixed, moving))
    thin = _extent_z(fixed)[1] - _extent_z(fixed)[0] < opts.thin_mm
    steps = [f"resampled to {'x'.join(map(str, fixed.GetSize()))} in {lap('resample'):.1f} s"]
    start = centred(fixed_mask, moving_mask)
    placements = z_search(fixed, moving, fixed_mask, start, opts, report.span(0.0, 0.2))
    steps.append(f"z search: {len(placements)} distinct placements in {lap('z_search'):.1f} s")
    best = None
    cands = placements[: opts.z_candidates]
    for i, (_, placement) in enumerate(cands):
        span = report.span(0.2 + 0.4 * i / len(cands), 0.2 + 0.4 * (i + 1) / len(cands))
        t, metric = _affine(fixed, moving, fixed_mask, start.GetCenter(), placement, thin, opts, span)
        if best is None or metric < best[1]:
            best = (t, metric, placement)
    steps.append(f"{'similarity' if thin else 'affine'} from {len(cands)} placement(s): MI {best[1]:.3f} "
                 f"in {lap('affine'):.1f} s")
    transform, metric = best[0], best[1]
    if opts.bspline_iterations > 0:
        bs_report = report.span(0.6, 1.0)
        transform, metric, mesh = _bspline(fixed, moving, fixed_mask, best[0], opts, bs_report)
        steps.append(f"B-spline mesh {mesh[0]}x{mesh[1]}x{mesh[2]}: MI {metric:.3f} in {lap('bspline'):.1f} s")
    report(1, 1, "registration: done")
    return Registration(transform, fixed, metric, steps, seconds)
