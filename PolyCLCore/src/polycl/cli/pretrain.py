"""``polycl pretrain``: PolyCL contrastive pre-training of an encoder on a folder of CT volumes.

Examples::

    polycl pretrain ct/ --strategy s -o encoder-s.pt                      # no labels needed
    polycl pretrain ct/ --strategy m --labels labels/ -o encoder-m.pt     # liver labels (id 5)
    polycl pretrain ct/ --strategy o --presence slices.csv -o enc.pt      # case,slice,present
    torchrun --nproc_per_node 4 -m polycl.cli.main pretrain ct/ --strategy s -o enc.pt   # DDP

Then ``polycl finetune --encoder encoder-m.pt`` starts fine-tuning from it.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="PolyCL contrastive pre-training of an encoder (strategies S, O, M)",
                       description="Pre-train a PolyCL encoder on a folder of CT volumes (image files or DICOM-series "
                                   "subfolders, or an MSD imagesTr/labelsTr layout).")
    p.add_argument("data_dir", help="folder of CT volumes")
    p.add_argument("-o", "--output", required=True, help="encoder checkpoint to write (e.g. encoder.pt); the training "
                   "state (<name>.state.pt) and loss curve (<name>.loss.png) are written beside it")
    p.add_argument("--strategy", choices=["s", "o", "m"], default="s",
                   help="example selection: s = same scan vs other scan (no labels); o = same vs other organ presence "
                        "across scans; m = same scan with same vs other presence (default s)")
    p.add_argument("--encoder", choices=["unet", "resunet", "transunet"], default="unet", help="encoder network")
    p.add_argument("--features", type=int, nargs="+", help="channels per level (default 16 32 64 128 256)")
    p.add_argument("--labels", help="folder of label volumes named like the images (organ presence for o/m)")
    p.add_argument("--target", default="liver", help="organ in the labels: liver, kidney, spleen or label ids like 5 or 2,3")
    p.add_argument("--presence", help="CSV with columns case,slice,present (slice = axial index from inferior, 0-based)")
    p.add_argument("--epochs", type=int, default=100, help="epochs (default 100, the paper's)")
    p.add_argument("--batch-size", type=int, default=20, help="anchors per minibatch and process (default 20)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    p.add_argument("--tau", type=float, help="temperature (default 1 / batch size, the paper's)")
    p.add_argument("--in-batch-negatives", action="store_true",
                   help="also use the other anchors of the minibatch as negatives (an extension beyond the paper)")
    p.add_argument("--size", type=int, default=256, help="slice size in pixels (default 256)")
    p.add_argument("--fraction", type=float, default=0.3, help="middle fraction of each scan's slices (default 0.3)")
    p.add_argument("--min-slices", type=int, default=1, help="use at least this many middle slices per scan")
    p.add_argument("--skip-unusable", action="store_true",
                   help="leave out anchor slices the strategy cannot serve (reported) instead of stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on the GPU")
    p.add_argument("--half", action="store_true", help="store the encoder checkpoint in fp16 (half the size)")
    p.add_argument("--cache", help="folder for cached preprocessed slices (default $POLYCL_HOME/cache/slices)")
    p.add_argument("--no-cache", action="store_true", help="do not cache preprocessed slices on disk")
    p.add_argument("--resume", action="store_true", help="continue from <output>.state.pt")
    p.set_defaults(func=run)


def run(args) -> int:
    from polycl.home import polycl_home
    from polycl.networks.encoders import DEFAULT_FEATURES
    from polycl.preprocess import PreprocessConfig
    from polycl.pretrain import PretrainConfig, SliceSelection, build_slice_dataset, find_scans, pretrain
    from polycl.distributed import from_env
    from polycl.io import parse_label_spec
    from polycl.progress import terminal

    main = from_env().is_main
    scans = find_scans(args.data_dir, args.labels, parse_label_spec(args.target))
    cache = None if args.no_cache else (args.cache or polycl_home() / "cache" / "slices")
    data = build_slice_dataset(scans, preprocess=PreprocessConfig(size=args.size),
                               selection=SliceSelection(args.fraction, args.min_slices),
                               presence_csv=args.presence, cache_dir=cache)
    if main:
        for row in data.summary():
            print(f"{row['case']}: {row['slices']} of {row['of']} slices; organ present {row['present']}, "
                  f"absent {row['absent']}, unknown {row['unknown']}")
    encoder = {"name": args.encoder, "features": list(args.features or DEFAULT_FEATURES)}
    if args.encoder == "transunet":
        encoder["img_size"] = args.size
    cfg = PretrainConfig(strategy=args.strategy, encoder=encoder, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, tau=args.tau, in_batch_negatives=args.in_batch_negatives, seed=args.seed,
                         device=args.device, amp=not args.no_amp, skip_unusable=args.skip_unusable, half=args.half)
    with terminal(f"pretrain {cfg.strategy.upper()}", unit="epoch", disable=not main) as bar:
        result = pretrain(data, args.output, cfg, resume=args.resume, progress=bar)
    if main:
        last = result.history[-1]["loss"] if result.history else float("nan")
        print(f"encoder: {result.encoder_path} ({result.epochs_done} epochs, final loss {last:.4f})")
        print(f"training state: {result.state_path}; loss curve: {result.curve_path}")
        print(f"fine-tune with: polycl finetune --encoder {result.encoder_path} ...")
    return 0
