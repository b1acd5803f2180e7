"""``polycl refine IMAGE MASK -o OUT``: refine a coarse mask with SAM box prompts (LiteMedSAM by default)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("refine", help="refine a coarse CT mask with SAM box prompts, slice by slice")
    p.add_argument("image", help="CT image file or DICOM series folder (HU)")
    p.add_argument("mask", help="coarse mask on the image's grid (nonzero = structure)")
    p.add_argument("--series", default=None, metavar="UID",
                   help="a DICOM folder with several series: the SeriesInstanceUID to read (listed when omitted)")
    p.add_argument("-o", "--output", required=True, help="refined mask file (.nii.gz, .nrrd, ...)")
    p.add_argument("--sam-model", dest="sam_model", default="litemedsam",
                   help="SAM model: litemedsam (bundled, default), sam_vit_b, sam_vit_l, sam_vit_h (downloaded on "
                        "first use with --download), medsam_vit_b (give --sam-checkpoint)")
    p.add_argument("--sam-checkpoint", default=None, help="path of a SAM checkpoint file you downloaded yourself")
    p.add_argument("--download", action="store_true",
                   help="allow downloading the --sam-model checkpoint into the cache "
                        "($POLYCL_CACHE or ~/.polycl/cache)")
    p.add_argument("--margin", type=int, default=3, help="pixels added around each component's box (default 3)")
    p.add_argument("--min-component", type=int, default=10,
                   help="components with fewer pixels (per slice) are left as they are (default 10)")
    p.add_argument("--label", type=int, default=None,
                   help="refine only this label value of a multi-label mask (default: every nonzero voxel)")
    p.add_argument("--plain", action="store_true",
                   help="the paper's plain refiner: one box per component, no widening and no quality guards")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace an output that exists (default: keep it and skip)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")
    p.add_argument("--resample-mask", action="store_true",
                   help="resample a mask on another grid onto the image (nearest, physical space) instead of refusing")
    p.set_defaults(func=run)


def run(args) -> int:
    from polycl.outputs import image_output

    # paths first, before the heavy imports: a bad path is answered at once and nothing is written
    out = image_output(args.output, [args.image, args.mask], overwrite=args.overwrite, what="refined mask")
    return 0 if out is None else _run(args, out)


def _run(args, out) -> int:
    import numpy as np

    from polycl.errors import InputError
    from polycl.io import label_on_image_grid, read_label, read_volume, write_mask_like
    from polycl import refine
    from polycl.progress import terminal
    from polycl.sam.weights import checkpoint_path

    options = refine.RefineOptions(sam_model=args.sam_model, checkpoint=args.sam_checkpoint, margin=args.margin,
                            min_component_px=args.min_component, plain=args.plain, device=args.device)
    options.validate()  # unknown model: refuse before reading anything
    volume = read_volume(args.image, args.series)
    label = read_label(args.mask)
    label = label_on_image_grid(label, volume, require_same_grid=not args.resample_mask, option="--resample-mask")
    mask = (label.array == args.label) if args.label is not None else (label.array > 0)
    if args.label is not None and not mask.any():
        raise InputError(f"{args.mask}: label value {args.label} does not occur in the mask")
    # fetch (or locate) the weights before the long run, so a missing file fails early
    with terminal(f"download {args.sam_model}", unit="B") as bar:
        checkpoint_path(args.sam_model, path=args.sam_checkpoint, download=args.download, progress=bar)
    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))
    with terminal("refine", unit="slice") as bar:
        result = refine.run(volume, mask.astype(np.uint8), options, progress=bar)
    write_mask_like(result.mask, volume, out)
    print(f"{args.image} -> {out}: {result.stats.summary()}")
    return 0
