"""``polycl models``: list the bundled and the user's models (``--json`` for machines)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="list bundled and user models with their scores")
    p.add_argument("--kind", choices=["segmentation", "encoder", "atlas-based"], help="only this kind")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from polycl.catalogue import list_targets
    from polycl.models import user_models_dir

    models = list_targets(args.kind)
    if args.json:
        print(json.dumps([m.to_json() for m in models], indent=2))
        return 0
    width = max([24] + [len(m.name) for m in models])
    print(f"{'name':{width}s} {'kind':12s} {'target':13s} {'source':7s} scores")
    for m in models:
        print(m.summary(width))
    print(f"(user models live in {user_models_dir()})")
    return 0
