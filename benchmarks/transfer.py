"""Cross-data-set check: a model's accuracy on the labelled sets it was not trained on, as one table.

Each set is read in its publisher's layout and classified through the public API, two ways where the images are
photos rather than 48 px crops:

- ``end-to-end``: :class:`fdrl.Recognizer` as a user calls it (the default detector, the largest face per image);
  an image without a face counts as wrong (``whole_image`` off) or is read whole (``+whole``: the Recognizer's
  default for images of at most ``WHOLE_IMAGE_MAX_SIDE`` px);
- ``crop``: the whole image is the face (``detector="none"``), as the set's faces are already cut out.

Labels are matched by name (``happiness`` = ``happy``, ``sadness`` = ``sad``, ``anger`` = ``angry``); a class the
model lacks (FERPlus's ``contempt`` for a 7-class model) counts as wrong, and so does a predicted class the set
lacks. Sets and the splits read (never one the model was selected on, where that is known):

- ``sfew``: SFEW 2.0 ``Train`` (860 aligned colour movie faces; its Val is the benchmark's test split);
- ``ferplus``: FERPlus ``val`` (FER2013 PublicTest images with the FERPlus majority label), for a model trained on
  FER2013 labels;
- ``fer2013``: FER2013 ``publictest`` (the original labels), for a model trained on FERPlus (whose epoch was
  selected on these images under FERPlus labels: an optimistic figure, marked so).

    python benchmarks/transfer.py --shared ../shared/data                 # the default model
    python benchmarks/transfer.py --model ferplus --shared ../shared/data --tta none --json transfer.json
    python benchmarks/transfer.py --checkpoint runs/x/best.pt --sets sfew --sfew ../shared/data/sfew
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fdrl.data.datasets import canonical_class
from fdrl.records import run_record, write_json

SETS = {"sfew": "train", "ferplus": "val", "fer2013": "publictest"}  # the split read; a model trained on a set skips it
SELECTED_ON = {("ferplus", "fer2013"): "selected on these images (FERPlus labels)"}  # (trained on, set) -> note
PHOTO_SETS = {"sfew"}  # colour photos of faces, where the detector's part is measured too


def score(pred: list[str | None], truth: list[str]) -> dict[str, float]:
    """Accuracy and mean class recall (%), over every image (``None``: no answer, wrong)."""
    hits = np.array([p == t for p, t in zip(pred, truth, strict=True)])
    classes = sorted(set(truth))
    recall = [hits[[t == c for t in truth]].mean() for c in classes]
    return {"accuracy": round(100 * float(hits.mean()), 2), "mean_class": round(100 * float(np.mean(recall)), 2)}


def evaluate(rec, images, truth: list[str], model_classes: list[str]) -> dict:
    """One pass of ``rec`` over ``images`` (PIL): accuracy with and without the whole-image reading."""
    labels = [canonical_class(c) for c in model_classes]
    t0 = time.perf_counter()
    res = rec.predict(images)
    seconds = time.perf_counter() - t0
    status = [s.status for s in res.images]
    best: dict[int, tuple[float, str]] = {}  # image index -> (face area, label) of its largest face
    index = {s.image_id: i for i, s in enumerate(res.images)}
    for f in res.faces:
        i, area = index[f.image_id], f.box[2] * f.box[3]
        if i not in best or area > best[i][0]:
            best[i] = (area, labels[model_classes.index(f.label)])
    with_whole = [best[i][1] if i in best else None for i in range(len(images))]
    detected_only = [p if s == "ok" else None for p, s in zip(with_whole, status, strict=True)]
    out = {"images": len(images), "no_face": status.count("no_face") + status.count("whole_image"),
           "ms_per_image": round(1000 * seconds / len(images), 1)}
    out["detected"] = score(detected_only, truth)
    out["with_whole"] = score(with_whole, truth)
    return out


def run(model: str | None, checkpoint: str | None, roots: dict[str, str], sets: list[str], tta: str,
        limit: int | None) -> dict:
    import fdrl
    from fdrl.checkpoint import read_checkpoint
    from fdrl.data.registry import create_dataset

    crop = fdrl.Recognizer(checkpoint, model=model, tta=tta, detector="none")
    trained_on = read_checkpoint(crop.checkpoint)["config"]["data"]["dataset"]  # the file's dict; no second model
    table = {"model": model or checkpoint or "default", "trained_on": trained_on, "tta": tta,
             "face_margin": crop.prep.face_margin, "sets": {}}
    for name in sets:
        split, dataset, note = SETS[name], name, SELECTED_ON.get((trained_on, name), "")
        if trained_on == name:
            table["sets"][name] = {"skipped": f"the model was trained on {trained_on}"}
            continue
        if name not in roots:
            table["sets"][name] = {"skipped": "no root given"}
            continue
        ds = create_dataset(dataset, roots[name], split, **({"label_mode": "majority"} if dataset == "ferplus" else {}))
        idx = np.arange(len(ds))
        if limit and limit < len(ds):
            idx = np.random.default_rng(0).choice(len(ds), limit, replace=False)
        images = [ds.load(int(i)) for i in idx]
        truth = [canonical_class(ds.classes[ds.samples[int(i)].label]) for i in idx]
        row = {"split": f"{dataset}/{split}", "note": note, "crop": evaluate(crop, images, truth, crop.classes)}
        if name in PHOTO_SETS:
            e2e = fdrl.Recognizer(checkpoint, model=model, tta=tta)
            row["end_to_end"] = evaluate(e2e, images, truth, e2e.classes)
        table["sets"][name] = row
    return table


def print_table(table: dict) -> None:
    print(f"model {table['model']} (trained on {table['trained_on']}), tta {table['tta']}")
    print(f"{'set':10} {'mode':22} {'n':>5} {'no face':>8} {'acc %':>7} {'mean class %':>13} {'ms/img':>7}")
    for name, row in table["sets"].items():
        if "skipped" in row:
            print(f"{name:10} skipped: {row['skipped']}")
            continue
        for mode in ("end_to_end", "crop"):
            if mode not in row:
                continue
            r = row[mode]
            variants = [("detected", r["detected"])] + ([("+whole", r["with_whole"])] if mode == "end_to_end" else [])
            for tag, s in variants:
                label = f"{mode} {tag}" if mode == "end_to_end" else mode
                print(f"{name:10} {label:22} {r['images']:5d} {r['no_face'] if mode == 'end_to_end' else '':>8} "
                      f"{s['accuracy']:7.2f} {s['mean_class']:13.2f} {r['ms_per_image']:7.1f}"
                      + (f"  ({row['note']})" if row["note"] else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--model", default=None, help="a shipped model's name (default: the default model)")
    who.add_argument("--checkpoint", default=None, help="an fdrl checkpoint")
    p.add_argument("--shared", default=None, help="a folder holding sfew/, fer2013/ and ferplus/ as published")
    for name in SETS:
        p.add_argument(f"--{name}", default=None, help=f"root of {name} (overrides --shared)")
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated subset of " + ", ".join(SETS))
    p.add_argument("--tta", default="flip")
    p.add_argument("--limit", type=int, default=None, help="at most this many images per set (seeded sample)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the table to this result file")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sets = [s for s in args.sets.split(",") if s]
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        raise SystemExit(f"--sets: unknown {unknown}; known: {', '.join(SETS)}")
    roots = {n: getattr(args, n) or (str(Path(args.shared) / n) if args.shared else None) for n in SETS}
    table = run(args.model, args.checkpoint, {n: r for n, r in roots.items() if r}, sets, args.tta, args.limit)
    print_table(table)
    if args.json:
        write_json(args.json, run_record("transfer") | {"threads": args.threads, "limit": args.limit} | table)


if __name__ == "__main__":
    main()
