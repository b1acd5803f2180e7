"""``polycl atlas add IMAGE LABEL`` / ``remove NAME`` / ``list``: the atlases of the location prior."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("atlas", help="add, remove or list the labelled CT atlases that locate organs by anatomy")
    asub = p.add_subparsers(dest="atlas_command", required=True, metavar="ACTION")
    a = asub.add_parser("add", help="store a labelled CT as a user atlas")
    a.add_argument("image", help="CT image file or DICOM folder (HU)")
    a.add_argument("label", help="label map in the image's physical space")
    a.add_argument("--name", default=None, help="atlas name (default: the image's file name)")
    a.add_argument("--labels", default=None, metavar="NAME=VALUE,...",
                   help="organ names and their label values (default: TotalSegmentator's, "
                        "spleen=1,kidney_right=2,kidney_left=3,liver=5, accepted only for a file holding several of "
                        "them; a 0/1 mask needs e.g. --labels liver=1)")
    a.set_defaults(func=run_add)
    rm = asub.add_parser("remove", help="delete a user atlas")
    rm.add_argument("name", help="the atlas's name (see `polycl atlas list`)")
    rm.set_defaults(func=run_remove)
    ls = asub.add_parser("list", help="list the bundled and the user's atlases and their organs")
    ls.set_defaults(func=run_list)


def run_add(args) -> int:
    from polycl.atlas.store import add_atlas, parse_labels

    dest = add_atlas(args.image, args.label, name=args.name,
                     labels=parse_labels(args.labels) if args.labels else None)
    print(f"atlas added: {dest}")
    return 0


def run_remove(args) -> int:
    from polycl.atlas.store import remove_atlas

    print(f"atlas removed: {remove_atlas(args.name)}")
    return 0


def run_list(args) -> int:
    import json

    from polycl.atlas.store import (
        BUNDLED_NAME,
        bundled_atlas_dir,
        user_atlas_names,
        user_atlases_dir,
    )

    print(f"{'name':28s} {'source':8s} organs")
    rows = [(BUNDLED_NAME, "bundled", bundled_atlas_dir())] + [(n, "user", user_atlases_dir() / n)
                                                               for n in user_atlas_names()]
    for name, source, folder in rows:
        organs = json.loads((folder / "atlas.json").read_text())["labels"]
        print(f"{name:28s} {source:8s} {', '.join(organs)}")
    print(f"(user atlases live in {user_atlases_dir()})")
    return 0
