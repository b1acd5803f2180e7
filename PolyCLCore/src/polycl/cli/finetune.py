"""``polycl finetune DATA_DIR -o MODEL_DIR``: fine-tune a U-Net on a folder of labelled CT."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a segmentation U-Net on a folder of labelled CTs",
                       description="Layouts: imagesTr/ + labelsTr/ (MSD, nnU-Net) or <case>/image.* + <case>/label.*. "
                                   "Under torchrun: DistributedDataParallel, --batch-size is the global batch.")
    p.add_argument("data_dir")
    p.add_argument("-o", "--output", default=None,
                   help="model folder (default: $POLYCL_HOME/models/NAME when --name is given)")
    p.add_argument("--name", default=None, help="install the result as a user model under this name")
    p.add_argument("--encoder", default=None, help="PolyCL encoder to start from, by name (polycl models --kind encoder) or path; head dropped")
    p.add_argument("--encoder-arch", default="unet", help="architecture when starting from random weights")
    p.add_argument("--features", type=int, nargs="+", default=None,
                   help="channels per level when starting from random weights (default 16 32 64 128 256)")
    p.add_argument("--target", default="liver", help="liver, kidney, or label value(s) such as 5 or 2,3")
    p.add_argument("--label-fraction", type=float, default=1.0, help="fraction of training slices with labels used")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=256, help="slice size in pixels (paper: 256)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of cases held out for validation")
    p.add_argument("--val-case", action="append", default=[], metavar="NAME",
                   help="validate on this case (repeat for several) instead of a random --val-fraction split")
    p.add_argument("--middle-fraction", type=float, default=1.0, help="use only the middle fraction of slices (paper: 0.3)")
    p.add_argument("--loss", default="dice", choices=["dice", "dice+bce"],
                   help="dice: the paper's Dice loss; dice+bce: faster convergence from random weights")
    p.add_argument("--keep", default="best", choices=["best", "last"],
                   help="checkpoint to keep: best validation Dice (default) or the last epoch")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--augmentation", default="standard", choices=["standard", "strong"],
                   help="strong: larger affine, elastic, field-of-view crops, HU shift, gamma, blur (for new scanners)")
    p.add_argument("--pixel-mm", type=float, default=None,
                   help="normalise in-plane spacing to this many mm per pixel (field of view = size x pixel-mm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/state.pt")
    p.add_argument("--progress-json", action="store_true",
                   help="print one JSON progress line per step and epoch on stdout (polycl.progress; for the Slicer module)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from polycl.errors import InputError
    from polycl.finetune import FinetuneConfig, finetune
    from polycl.models import check_model_name, install_user_model, user_models_dir
    from polycl.progress import json_lines, terminal

    if args.output is None and args.name is None:
        raise InputError("give an output folder (-o MODEL_DIR) or a model name (--name NAME)")
    if args.name:
        check_model_name(args.name)
    out = Path(args.output) if args.output else user_models_dir() / args.name
    cfg = FinetuneConfig(target=args.target, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         label_fraction=args.label_fraction, val_fraction=args.val_fraction,
                         middle_fraction=args.middle_fraction, size=args.size, encoder=args.encoder,
                         encoder_arch=args.encoder_arch, augment=args.augment,
                         augmentation=args.augmentation, pixel_mm=args.pixel_mm, loss=args.loss, keep=args.keep,
                         val_cases=tuple(args.val_case), seed=args.seed, device=args.device)
    if args.features:
        cfg.features = tuple(args.features)
    if args.progress_json:
        result = finetune(args.data_dir, out, cfg, resume=args.resume, progress=json_lines())
    else:
        with terminal("fine-tune", unit="epoch") as bar:
            result = finetune(args.data_dir, out, cfg, resume=args.resume, progress=bar)
    from polycl.distributed import from_env

    if not from_env().is_main:  # under torchrun, rank 0 reports and installs
        return 0
    summary = f"best validation Dice {result.best_val_dice:.4f} at epoch {result.best_epoch}"
    if args.progress_json:  # the last progress event says how it ended (the Slicer panel shows it)
        json_lines()(cfg.epochs, cfg.epochs, f"fine-tuning finished: {summary}")
    print(f"{summary}; model: {result.model_path}")
    if result.val_cases == result.train_cases:
        print("note: only one case, so validation used the training case (no held-out score)")
    if args.name and out.resolve().parent != user_models_dir().resolve():
        install_user_model(out, args.name)
    if args.name:
        print(f"installed as '{args.name}': polycl segment IMAGE -o OUT --model {args.name}")
    return 0
