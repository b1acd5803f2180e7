"""Leave-one-scan-out (LOSO) study on every labelled scan of the shared data: train, then evaluate.

    # 1. one U-Net per held-out scan and recipe (cached in WORK; about 5-15 min each on 2 cores)
    .venv/bin/python PolyCLCore/scripts/loso_study.py train --recipe starter --recipe general --work /tmp/loso
    # 2. every segment mode on every held-out scan, with the model that never saw it
    .venv/bin/python PolyCLCore/scripts/loso_study.py evaluate --work /tmp/loso --out PolyCLCore/docs
    # 3. the shipped model: the winning recipe on every labelled scan
    .venv/bin/python PolyCLCore/scripts/loso_study.py final --recipe general -o /tmp/polycl-liver

Scans (:func:`polycl.datasets.labelled_scans`): ``example_ct``, ``example_ct_dicom`` and the dcmqi
3-slice CT for the liver. Labels are rewritten once into WORK/data as binary masks on the image grid
(value 5, TotalSegmentator's liver id, so that every case speaks the same label) - the dcmqi mask is
0/1 and the DICOM label lies on a y-flipped grid. The held-out scan of a fold is its validation case
with ``keep="last"``: its score is logged per epoch but never picks a checkpoint.

Recipes (``RECIPES``): "starter" is the recipe of the first bundled models (128 px whole-slice
resize, standard augmentation); "general" normalises in-plane spacing (3 mm pixels, 160 px = a
480 mm field of view) and uses strong augmentation (polycl.finetune.augmentations); "strong" is the
starter's input with strong augmentation (to tell the two changes apart).

``evaluate`` writes ``loso_<target>.csv``, ``loso_<target>.md`` (the tables of the docs and model
cards) and ``loso_<target>.png`` into --out, keeping the rows already there that this run did not
measure again. Times are wall-clock seconds per volume on this machine.

Atlas prior: the modes ``unet``, ``refine`` and ``pipeline`` run with the prior off (as
they were measured before it existed: under 'auto' the bundled atlas would hand ``example_ct`` its own
label); the modes ``pipeline prior=on|auto|off`` run the pipeline with ``SegmentOptions(prior=...)``.
The scan being segmented is never the atlas: the bundled atlas is ``example_ct``, so that fold runs
with ``POLYCL_BUNDLED_ATLAS=off`` and the atlases of :data:`FOLD_ATLASES` (other labelled scans, added
with ``polycl.atlas.store.add_atlas`` into a temporary ``POLYCL_HOME`` under WORK); the other folds
use the bundled atlas, as a user does.

    .venv/bin/python PolyCLCore/scripts/loso_study.py evaluate --recipe starter --work /tmp/loso \
        --modes "pipeline prior=on" "pipeline prior=off"
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from polycl.progress import terminal

#: Fine-tuning recipes compared by the study (FinetuneConfig fields, plus the number of optimiser steps).
RECIPES = {
    "starter": dict(size=128, pixel_mm=None, augmentation="standard", steps=160),
    "general": dict(size=160, pixel_mm=3.0, augmentation="strong", steps=240),
    "strong": dict(size=128, pixel_mm=None, augmentation="strong", steps=240),
}
COMMON = dict(loss="dice+bce", encoder="polycl-encoder-unet-o", keep="last", seed=0, batch_size=10)
MODES = ("unet", "refine", "pipeline")
#: Pipeline with the atlas prior forced on / left to 'auto' (the default) / off: mode -> SegmentOptions.prior.
PRIOR_MODES = {"pipeline prior=on": "on", "pipeline prior=auto": "auto", "pipeline prior=off": "off"}
#: The scan the bundled atlas was made from: its fold must not use it.
BUNDLED_ATLAS_SCAN = "example_ct"
#: Held-out scan -> the labelled scans (other patients) added as user atlases for its fold, with their
#: organs (label values of the TotalSegmentator map). Folds not listed use the bundled atlas only.
FOLD_ATLASES = {"example_ct": {"example_ct_dicom": {"liver": 5, "spleen": 1}}}
#: Detail of a prior-mode row whose registration failed: the row is the pipeline without the prior.
PRIOR_FAILED = "no valid atlas: the prior failed"


def prepare_data(target: str, work: Path) -> tuple[Path, list[str]]:
    """WORK/data/<target>/<scan>/{image -> shared image, label.nii.gz (binary, value 5 or 2)}."""
    from polycl.datasets import labelled_scans
    from polycl.io import label_on_image_grid, read_label, read_volume, select_labels, write_mask_like

    root = work / "data" / target
    names = []
    for scan in labelled_scans(target):
        case = root / scan.name
        names.append(scan.name)
        label_out = case / "label.nii.gz"
        if label_out.exists():
            continue
        case.mkdir(parents=True, exist_ok=True)
        link = case / ("image" if scan.image.is_dir() else "image" + "".join(scan.image.suffixes))
        if not link.exists():
            link.symlink_to(scan.image.resolve(), target_is_directory=scan.image.is_dir())
        image = read_volume(scan.image)
        label = label_on_image_grid(read_label(scan.label), image)
        mask = select_labels(label.array, scan.values)
        write_mask_like(mask * (5 if target == "liver" else 2), image, label_out)
    return root, names


def config_for(recipe: str, target: str, n_train_slices: int, val_cases: tuple[str, ...]):
    from polycl.finetune import FinetuneConfig

    r = dict(RECIPES[recipe])
    steps = r.pop("steps")
    per_epoch = max(1, n_train_slices // COMMON["batch_size"])
    return FinetuneConfig(target=target, epochs=max(1, math.ceil(steps / per_epoch)), val_cases=val_cases,
                          **COMMON, **r)


def slices_of(case_dir: Path) -> int:
    from polycl.io import read_label

    return read_label(case_dir / "label.nii.gz").shape[0]


def train(args) -> None:
    from polycl.finetune import finetune

    torch.set_num_threads(args.threads)
    data, names = prepare_data(args.target, args.work)
    for recipe in args.recipe:
        for held in names:
            out = args.work / recipe / args.target / f"without-{held}"
            if (out / "model.json").exists():
                print(f"{recipe} without {held}: done already ({out})")
                continue
            n = sum(slices_of(data / c) for c in names if c != held)
            cfg = config_for(recipe, args.target, n, (held,))
            t0 = time.perf_counter()
            with terminal(f"{recipe} without {held}", unit="step") as bar:
                res = finetune(data, out, cfg, resume=(out / "state.pt").exists(), progress=bar)
            print(f"{recipe} without {held}: {cfg.epochs} epochs in {time.perf_counter() - t0:.0f} s; "
                  f"held-out Dice on the model grid {res.best_val_dice:.3f}")


def final(args) -> None:
    """The winning recipe on every labelled scan (nothing held out; the LOSO table is its evidence)."""
    from polycl.finetune import finetune

    torch.set_num_threads(args.threads)
    data, names = prepare_data(args.target, args.work)
    n = sum(slices_of(data / c) for c in names)
    cfg = config_for(args.recipe[0], args.target, n, ())
    cfg.val_fraction = 0.0  # every case trains; validation then reports the training cases
    with terminal("fine-tune", unit="step") as bar:
        res = finetune(data, args.output, cfg, resume=(Path(args.output) / "state.pt").exists(), progress=bar)
    print(json.dumps({"epochs": cfg.epochs, "train_cases": res.train_cases, "train_dice": res.best_val_dice}))


def evaluate(args) -> None:
    from polycl.datasets import labelled_scans
    from polycl.evaluate import mask_scores
    from polycl.inference import load_model
    from polycl.io import label_on_image_grid, read_label, read_volume, select_labels
    from polycl import segment
    from polycl.errors import InputError

    torch.set_num_threads(args.threads)
    rows = []
    for recipe in args.recipe:
        for scan in labelled_scans(args.target):
            model_dir = args.work / recipe / args.target / f"without-{scan.name}"
            if not (model_dir / "model.json").exists():  # written when training is complete
                print(f"skip {recipe}/{scan.name}: no finished fold model in {model_dir} (run train first)")
                continue
            model = load_model(str(model_dir / "model.pt"))
            volume = read_volume(scan.image)
            ref = select_labels(label_on_image_grid(read_label(scan.label), volume).array, scan.values)
            for mode in args.modes:
                cached = args.work / "eval" / f"{recipe}-{scan.name}-{mode.replace(' ', '-')}.json"
                if cached.exists():  # one row per (recipe, scan, mode): re-running resumes
                    rows.append(json.loads(cached.read_text()))
                    continue
                prior = PRIOR_MODES.get(mode, "off")
                opts = segment.SegmentOptions(mode=mode.split()[0], engine="chain", prior=prior)
                with fold_atlases(args.work, scan.name, mode) as atlases:
                    t0 = time.perf_counter()
                    try:
                        result, prior_note = segment.run(volume, model, opts), ""
                    except (RuntimeError, InputError) as exc:  # no valid atlas for this scan: say so, run without
                        if mode not in PRIOR_MODES:
                            raise
                        prior_note = f"{PRIOR_FAILED} ({str(exc).strip().splitlines()[-1][:160]}); "
                        t0 = time.perf_counter()
                        result = segment.run(volume, model, dataclasses.replace(opts, prior="off"))
                    seconds = time.perf_counter() - t0
                    if opts.prior != "off" and not prior_note:
                        prior_note = prior_alone(volume, ref, atlases)
                s = mask_scores(result.mask, ref, volume.spacing_zyx)
                rows.append({"target": args.target, "recipe": recipe, "scan": scan.name, "mode": mode,
                             "dice": round(s.dice, 4), "hd95_mm": round(s.hd95_mm, 1), "seconds": round(seconds, 1),
                             "slices": volume.shape[0], "engine": result.engine or "",
                             "detail": prior_note + result.summary()})
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(rows[-1]))
                print(f"{recipe:8s} {scan.name:18s} {mode:9s} Dice {s.dice:.3f} HD95 {s.hd95_mm:6.1f} mm "
                      f"{seconds:6.1f} s  {result.summary()}")
    write_outputs(rows, args.out, args.target)


@contextlib.contextmanager
def fold_atlases(work: Path, held: str, mode: str):
    """Inside: the atlases the prior may use for the fold that holds out ``held`` (names; empty for
    modes without the prior), set through ``POLYCL_HOME`` (WORK/atlases/without-<held>, user atlases
    made from :data:`FOLD_ATLASES`) and ``POLYCL_BUNDLED_ATLAS`` (off for the bundled atlas's own
    scan). The environment is restored on the way out."""
    from polycl.atlas.store import BUNDLED_NAME, add_atlas, user_atlases_dir
    from polycl.datasets import labelled_scans

    saved = {k: os.environ.get(k) for k in ("POLYCL_HOME", "POLYCL_BUNDLED_ATLAS")}
    names: list[str] = []
    try:
        if mode in PRIOR_MODES:
            os.environ["POLYCL_HOME"] = str(work / "atlases" / f"without-{held}")
            os.environ["POLYCL_BUNDLED_ATLAS"] = "off" if held == BUNDLED_ATLAS_SCAN else "on"
            names = [] if held == BUNDLED_ATLAS_SCAN else [BUNDLED_NAME]
            scans = {s.name: s for s in labelled_scans("liver")}
            for name, organs in FOLD_ATLASES.get(held, {}).items():
                if name == held:
                    raise ValueError(f"fold {held}: its own scan cannot be its atlas")
                if not (user_atlases_dir() / name / "atlas.json").exists():
                    add_atlas(scans[name].image, scans[name].label, name=name, labels=organs)
                names.append(name)
        yield names
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def prior_alone(volume, ref: np.ndarray, atlases: list[str]) -> str:
    """'atlases A+B; prior alone Dice D; ' for the row's detail: the liver prior thresholded at 0.5 (what
    Segment takes when the U-Net has no plausible liver) against the reference, on the input grid."""
    from polycl.atlas.prior import compute_prior
    from polycl.errors import InputError
    from polycl.evaluate import mask_scores

    try:
        prior = compute_prior(volume, ("liver",))
    except (RuntimeError, InputError) as exc:
        return f"atlases {'+'.join(atlases)}; prior alone: failed ({str(exc).strip().splitlines()[-1][:160]}); "
    s = mask_scores(prior.mask("liver").astype(np.uint8), ref, volume.spacing_zyx)
    return f"atlases {'+'.join(atlases)}; prior alone Dice {s.dice:.3f} (HD95 {s.hd95_mm:.0f} mm); "


def merged(rows: list[dict], path: Path) -> list[dict]:
    """The rows already in the CSV at ``path`` (numbers as numbers) with ``rows`` replacing those of the
    same (recipe, scan, mode) and the others appended: a partial rerun keeps the older rows."""
    if not path.exists():
        return rows
    new = {(r["recipe"], r["scan"], r["mode"]): r for r in rows}
    with open(path, newline="") as f:
        old = list(csv.DictReader(f))
    for r in old:
        r.update(dice=float(r["dice"]), hd95_mm=float(r["hd95_mm"]), seconds=float(r["seconds"]),
                 slices=int(r["slices"]))
    keys = {(r["recipe"], r["scan"], r["mode"]) for r in old}
    return [new.get((r["recipe"], r["scan"], r["mode"]), r) for r in old] + [
        r for r in rows if (r["recipe"], r["scan"], r["mode"]) not in keys]


def write_outputs(rows: list[dict], out: Path, target: str) -> None:
    from polycl.atomic import atomic_path, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    rows = merged(rows, out / f"loso_{target}.csv")
    with atomic_path(out / f"loso_{target}.csv", ".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    scans = list(dict.fromkeys(r["scan"] for r in rows))
    lines = [f"Leave-one-scan-out, {target}: 3D Dice (HD95 mm; seconds per volume) of the model that never saw the "
             f"scan. Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
             "thread(s), CPU.", "",
             "| recipe | mode | " + " | ".join(scans) + " | mean Dice |", "|---|---|" + "---|" * (len(scans) + 1)]
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        for mode in dict.fromkeys(r["mode"] for r in rows):
            cells = {r["scan"]: r for r in rows if r["recipe"] == recipe and r["mode"] == mode}
            if not cells:
                continue
            text = [f"{cells[s]['dice']:.3f} ({cells[s]['hd95_mm']:.0f}; {cells[s]['seconds']:.0f} s)"
                    + (" *" if PRIOR_FAILED in cells[s]["detail"] else "") if s in cells else "-" for s in scans]
            mean = np.mean([c["dice"] for c in cells.values()])
            lines.append(f"| {recipe} | {mode} | " + " | ".join(text) + f" | {mean:.3f} |")
    if any(PRIOR_FAILED in r["detail"] for r in rows):
        lines += ["", (f"\\* {PRIOR_FAILED} on this scan (registration error in the row's detail, "
                       f"loso_{target}.csv): the cell is the pipeline run without the prior.")]
    write_text_atomic(out / f"loso_{target}.md", "\n".join(lines) + "\n")
    plot(rows, out / f"loso_{target}.png", scans)
    print("\n".join(lines))


def plot(rows: list[dict], path: Path, scans: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from polycl.atomic import atomic_path

    combos = list(dict.fromkeys((r["recipe"], r["mode"]) for r in rows))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / max(1, len(combos))
    for i, (recipe, mode) in enumerate(combos):
        vals = [next((r["dice"] for r in rows if (r["recipe"], r["mode"], r["scan"]) == (recipe, mode, s)), np.nan)
                for s in scans]
        ax.bar(np.arange(len(scans)) + i * width, vals, width, label=f"{recipe} / {mode}", color=plt.cm.tab20(i % 20))
    ax.set_xticks(np.arange(len(scans)) + width * (len(combos) - 1) / 2, scans)
    ax.set_ylim(0, 1)
    ax.set_ylabel("3D Dice (held-out scan)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Leave-one-scan-out: each scan segmented by a model that never saw it")
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["train", "evaluate", "final"])
    p.add_argument("--target", default="liver", choices=["liver"])
    p.add_argument("--recipe", action="append", choices=list(RECIPES))
    p.add_argument("--work", type=Path, default=Path("/tmp/polycl-loso"))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES) + list(PRIOR_MODES))
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    p.add_argument("-o", "--output", type=Path, default=None, help="final: model folder")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    args.recipe = args.recipe or list(RECIPES)
    {"train": train, "evaluate": evaluate, "final": final}[args.stage](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
