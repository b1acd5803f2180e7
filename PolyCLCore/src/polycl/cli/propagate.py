"""``polycl propagate IMAGE SEED -o OUT``: carry annotated slice(s) of SEED through the CT volume."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("propagate", help="propagate annotated slice(s) through a CT (SAM 2 or chained LiteMedSAM)")
    p.add_argument("image", help="CT image file or DICOM series folder (HU)")
    p.add_argument("seed", help="mask volume on the image's grid; its annotated slice(s) seed the run "
                                "(a whole coarse mask: its middle non-empty slice)")
    p.add_argument("--series", default=None, metavar="UID",
                   help="a DICOM folder with several series: the SeriesInstanceUID to read (listed when omitted)")
    p.add_argument("-o", "--output", required=True, help="output mask file (.nii.gz, .nrrd, ...)")
    p.add_argument("--slice", type=int, action="append", dest="slices", metavar="K",
                   help="seed only from slice K of the image array (axis 0, Slicer's IJK k); repeat for several")
    p.add_argument("--engine", choices=["auto", "sam2", "chain"], default="auto",
                   help="sam2, chain (offline LiteMedSAM) or auto: SAM 2 if its weights are cached (default)")
    p.add_argument("--sam2", default=None, metavar="NAME|PATH",
                   help="SAM 2.1 checkpoint: tiny, small, base_plus, large, or a .pt path")
    p.add_argument("--download", action="store_true", help="download the --sam2 checkpoint if it is not cached")
    p.add_argument("--stop-after", type=int, default=3, metavar="K",
                   help="end a direction after K slices in a row where the organ has vanished (0: never)")
    p.add_argument("--start", type=int, default=None, help="first slice (image array index) to propagate into")
    p.add_argument("--end", type=int, default=None, help="last slice (image array index) to propagate into")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--resample-seed", action="store_true",
                   help="resample a seed mask on another grid onto the image (nearest, physical space) instead of refusing")
    p.add_argument("--overwrite", action="store_true", help="replace an output that exists (default: keep it and skip)")
    p.set_defaults(func=run)


def run(args) -> int:
    from polycl.outputs import image_output

    # paths first, before the heavy imports: a bad path is answered at once and nothing is written
    out = image_output(args.output, [args.image, args.seed], overwrite=args.overwrite, what="mask")
    return 0 if out is None else _run(args, out)


def _run(args, out) -> int:
    import numpy as np

    from polycl.errors import InputError
    from polycl.io import label_on_image_grid, read_label, read_volume, write_mask_like
    from polycl import propagate
    from polycl.progress import terminal
    from polycl.validate import require_ct, require_nonempty

    volume = read_volume(args.image, args.series)
    require_ct(volume)
    seed = label_on_image_grid(read_label(args.seed), volume, require_same_grid=not args.resample_seed,
                               option="--resample-seed", what="seed mask")
    require_nonempty(seed.array, f"seed mask {args.seed}")
    if args.engine == "sam2" or args.download:
        from polycl.propagate.sam2_weights import ensure_sam2

        with terminal("download SAM 2", unit="B") as bar:
            ensure_sam2(args.sam2, download=args.download, progress=bar)
    options = propagate.PropagateOptions(engine=args.engine, sam2=args.sam2, stop_after=args.stop_after or None,
                                         start=args.start, end=args.end, device=args.device, check_ct=False)
    with terminal("propagate", unit="slice") as bar:
        result = propagate.run(volume, seed.array, options, seed_slices=args.slices, progress=bar)
    write_mask_like(result.mask, volume, out)
    conf = np.array([result.confidence[k] for k in result.visited if k not in result.seeds] or [np.nan])
    low = result.low_confidence(0.5)
    print(f"engine: {result.engine.name} ({result.engine.reason}{'; ' + result.engine.detail if result.engine.detail else ''})")
    print(f"seed slice(s) (canonical axial order): {result.seeds}; visited {len(result.visited)} slices "
          f"{min(result.visited)}..{max(result.visited)}; {int((result.mask.reshape(result.mask.shape[0], -1).any(1)).sum())} "
          f"non-empty slices; mean confidence {np.nanmean(conf):.2f}")
    print(result.describe_objects())
    if low:
        print(f"check these slices (confidence < 0.5, canonical order): {low}")
    print(f"{args.image} -> {out} in {result.seconds:.1f} s")
    return 0
