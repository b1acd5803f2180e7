"""``polycl segment IMAGE_OR_DIR -o OUT``: segment one CT or a folder of CTs (batch, resumable)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment a CT (file or DICOM folder) or a folder of CTs")
    p.add_argument("input", help="image file, DICOM series folder, or a folder of images (batch)")
    p.add_argument("-o", "--output", required=True,
                   help="output mask file (.nii.gz, .nrrd, ...) for one image; an output folder for a batch")
    p.add_argument("--series", default=None, metavar="UID",
                   help="a DICOM folder with several series: the SeriesInstanceUID to read (listed when omitted)")
    p.add_argument("--model", default=None, help="registry name or checkpoint path (default: polycl-liver)")
    p.add_argument("--target", default=None, metavar="ORGAN",
                   help="segment an atlas organ with no network (spleen, kidney, liver, ... see `polycl models`): "
                        "atlas prior -> SAM seed -> propagation")
    p.add_argument("--prior", choices=["auto", "on", "off"], default="auto",
                   help="atlas location prior (auto: for targets an atlas has; see `polycl atlas list`)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-largest-cc", dest="largest_cc", action="store_false",
                   help="keep every connected component instead of the largest one(s)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    from polycl.segment import MODES

    p.add_argument("--mode", choices=MODES, default=None,
                   help="unet: the U-Net alone; refine: + SAM box refinement; pipeline (default): U-Net, SAM-refined "
                        "reference slice per component, propagation, fusion (see docs/evaluation.md)")
    p.add_argument("--engine", choices=["auto", "sam2", "chain"], default="auto",
                   help="pipeline: propagation engine (auto: SAM 2 if its weights are cached, else chain)")
    p.add_argument("--sam2", default=None, metavar="NAME|PATH", help="pipeline: SAM 2.1 checkpoint for --engine sam2")
    p.add_argument("--sam-model", dest="sam_model", default="litemedsam",
                   help="SAM model of refinement and chaining (default litemedsam; see polycl refine --help)")
    p.add_argument("--margin", type=int, default=3, help="refine/pipeline: pixels around each SAM box (default 3)")
    p.add_argument("--min-component", type=int, default=10,
                   help="refine/pipeline: 2D components with fewer pixels are left as the U-Net drew them (default 10)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output that exists (default: keep it and skip; a batch resumes that way)")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.add_argument("--progress-json", action="store_true",
                   help="batch: one JSON progress line per case on stdout (polycl.progress; for the Slicer module)")
    p.set_defaults(func=run)


def _is_batch(path) -> bool:
    from pathlib import Path

    from polycl.io import is_dicom_folder

    p = Path(path)
    return p.is_dir() and not is_dicom_folder(p)


def options_from_args(args):
    """The :class:`polycl.segment.SegmentOptions` of a ``segment`` command line."""
    from polycl.segment import DEFAULT_MODE, SegmentOptions

    return SegmentOptions(mode=args.mode or DEFAULT_MODE, threshold=args.threshold, largest_cc=args.largest_cc,
                          batch_size=args.batch_size, sam_model=args.sam_model, margin=args.margin,
                          min_component_px=args.min_component, engine=args.engine, sam2=args.sam2, device=args.device, prior=args.prior)


def run(args) -> int:
    from polycl.errors import InputError
    from polycl.outputs import check_output_folder, image_output, require_inputs

    # paths first, before the heavy imports: a bad path is answered at once and nothing is written
    require_inputs(args.input)
    batch = _is_batch(args.input)
    if batch:
        if args.series:
            raise InputError("--series picks a series of one DICOM folder; a batch folder holds several cases")
        check_output_folder(args.output, args.input)
    elif image_output(args.output, [args.input], overwrite=args.overwrite) is None:
        return 0
    from polycl.catalogue import atlas_target_name

    atlas_target_name(args.model, args.target)  # both at once: refused before any work
    return _run(args, batch)


def _run(args, batch: bool) -> int:
    from dataclasses import replace
    from pathlib import Path

    from polycl import distributed
    from polycl.batch import run_batch
    from polycl.errors import InputError
    from polycl import catalogue
    from polycl.io import read_volume, write_mask_like
    from polycl.segment import run as segment
    from polycl.progress import json_lines, terminal

    options = options_from_args(args)
    if options.engine == "sam2":
        from polycl.propagate.sam2_weights import ensure_sam2

        ensure_sam2(options.sam2, download=False)
    dist = distributed.from_env()
    if dist.enabled:  # started by torchrun: each rank segments its share of a folder's cases
        if not batch:
            raise InputError("several processes (torchrun) segment a folder of CTs; run one image without torchrun")
        device = distributed.rank_device(args.device, dist)
        dist = distributed.setup(device, backend="gloo")
        options = replace(options, device=str(device))
    model = catalogue.load(args.model, options.device, target=args.target)  # a network or an atlas target

    def segment_one(path, out: Path, show_bar: bool, series: str | None = None) -> str:
        volume = read_volume(path, series)
        with terminal(f"segment ({options.mode})", percent=True, disable=not show_bar) as bar:
            result = segment(volume, model, options, progress=bar)
        write_mask_like(result.mask, volume, out)
        return result.report_line()

    if batch:
        # one line per case (the report line); with --progress-json the same as JSON progress events
        report = json_lines() if args.progress_json else (lambda done, total, message: print(message, flush=True))
        outcomes = run_batch(args.input, args.output, lambda case, out: segment_one(case.image, out, False),
                             overwrite=args.overwrite, dist=dist, progress=report)
        distributed.teardown(dist)  # (a rank that raises exits instead: torchrun then stops the others)
        return 1 if any(o.status == "failed" for o in outcomes) else 0
    detail = segment_one(args.input, Path(args.output), True, args.series)
    print(f"{args.input} -> {args.output}: {detail} (model {model.entry.name}, device {model.device})")
    return 0
