"""``polycl segment IMAGE_OR_DIR -o OUT``: segment one CT or a folder of CTs (batch, resumable)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment a CT (file or DICOM folder) or a folder of CTs")
    p.add_argument("input", help="image file, DICOM series folder, or a folder of images (batch)")
    p.add_argument("-o", "--output", required=True,
                   help="output mask file (.nii.gz, .nrrd, ...) for one image; an output folder for a batch")
    p.add_argument("--model", default=None, help="registry name or checkpoint path (default: polycl-liver)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-largest-cc", dest="largest_cc", action="store_false",
                   help="keep every connected component instead of the largest one(s)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    p.add_argument("--refine", action="store_true", help="refine the mask with SAM box prompts (LiteMedSAM)")
    p.add_argument("--sam", default="litemedsam", help="SAM backend for --refine (default litemedsam)")
    p.add_argument("--overwrite", action="store_true", help="batch: redo cases whose output exists")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.set_defaults(func=run)


def _is_batch(path) -> bool:
    from pathlib import Path

    from polycl.cases import _is_dicom_folder

    p = Path(path)
    return p.is_dir() and not _is_dicom_folder(p)


def run(args) -> int:
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from polycl.batch import run_batch
    from polycl.errors import InputError
    from polycl.inference import load_model, segment_volume
    from polycl.io import has_image_suffix, read_volume, write_mask_like

    model = load_model(args.model, args.device)

    def segment_one(path, out: Path, show_bar: bool) -> str:
        volume = read_volume(path)
        with tqdm(total=volume.shape[0], unit="slice", desc="segment", disable=not show_bar, leave=False) as bar:
            mask = segment_volume(volume, model, threshold=args.threshold, largest_cc=args.largest_cc,
                                  batch_size=args.batch_size, progress=lambda done, total: bar.update(done - bar.n))
        if args.refine:
            from polycl.sam.refine import refine_volume

            if mask.any():
                mask = refine_volume(volume, mask, backend=args.sam, device=args.device).mask
        write_mask_like(mask, volume, out)
        ml = float(mask.sum()) * float(np.prod(volume.geometry.spacing)) / 1000.0
        return f"{model.target} {ml:.1f} ml" + (" (refined)" if args.refine else "")

    if _is_batch(args.input):
        outcomes = run_batch(args.input, args.output, lambda case, out: segment_one(case.image, out, False),
                             overwrite=args.overwrite)
        return 1 if any(o.status == "failed" for o in outcomes) else 0
    if not has_image_suffix(args.output):
        raise InputError(f"{args.output}: for one image, the output must be a file such as mask.nii.gz")
    detail = segment_one(args.input, Path(args.output), True)
    print(f"{args.input} -> {args.output}: {detail} (model {model.entry.name}, device {model.device})")
    return 0
