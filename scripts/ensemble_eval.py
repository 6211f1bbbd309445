"""What averaging the class probabilities of several checkpoints (e.g. the seeds of one recipe) gains on a split.

    python scripts/ensemble_eval.py --root ../shared/data/fer2013 --split val \
        runs/D_fdrl_s0/best.pt runs/D_fdrl_s1/best.pt runs/D_fdrl_s2/best.pt [--tta flip] [--json out.json]

Each checkpoint's split is built as ``fdrl eval`` builds it (its preprocessing and decode cache); the members
must see the same samples in the same order. Printed: every member's accuracy, then the mean of the first
k members' probabilities for k = 2..N (accuracy and mean class accuracy), so the gain per added member shows.
A figure on the split the members were selected on is optimistic by the selection; use a validation split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from fdrl.checkpoint import load_checkpoint
from fdrl.data.preprocess import BatchTransform
from fdrl.engine.evaluate import checkpoint_split, predict
from fdrl.engine.report import classification_metrics
from fdrl.errors import FdrlError
from fdrl.runtime import resolve_device


def member_probabilities(path: str, dataset: str, root: str, split: str, tta: str, device: torch.device,
                         batch_size: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(probabilities (N, K), labels (N,), sample ids, class names) of one checkpoint on the split."""
    loaded = load_checkpoint(path)
    _, d, data = checkpoint_split(loaded, dataset, root, split, log=lambda m: None)
    prep = d.preprocessing
    res = predict(loaded.model.to(device), data, BatchTransform(prep.mean, prep.std), device, batch_size, tta,
                  keep_features=False)
    return res["probs"], res["labels"], list(data.ids), list(data.classes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="two or more checkpoints (.pt) with the same classes")
    ap.add_argument("--dataset", default="fer2013")
    ap.add_argument("--root", default=None, help="the data set as its publisher lays it out (synthetic: none)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--tta", default="none", choices=("none", "flip", "tencrop"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if len(args.checkpoints) < 2:
        print("error: an ensemble needs two or more checkpoints", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    members, rows = [], []
    try:
        for path in args.checkpoints:
            t0 = time.perf_counter()
            probs, labels, ids, classes = member_probabilities(path, args.dataset, args.root, args.split,
                                                               args.tta, device, args.batch_size)
            if members and (ids != members[0][2] or classes != members[0][3]):
                raise FdrlError(f"{path}: its {args.dataset}/{args.split} samples or classes differ from "
                                f"{args.checkpoints[0]}'s (members must see the same split)")
            members.append((probs, labels, ids, classes))
            m = classification_metrics(probs.argmax(1), labels, classes)
            rows.append({"members": [path], "accuracy": 100 * m["accuracy"],
                         "mean_class_accuracy": 100 * m["mean_class_accuracy"],
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"member {path}: accuracy {rows[-1]['accuracy']:.2f} %, mean class "
                  f"{rows[-1]['mean_class_accuracy']:.2f} % ({rows[-1]['seconds']} s)", flush=True)
    except FdrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    labels, classes = members[0][1], members[0][3]
    for k in range(2, len(members) + 1):
        mean = np.mean([p for p, *_ in members[:k]], axis=0)
        m = classification_metrics(mean.argmax(1), labels, classes)
        rows.append({"members": args.checkpoints[:k], "accuracy": 100 * m["accuracy"],
                     "mean_class_accuracy": 100 * m["mean_class_accuracy"],
                     "recall": {c: m["per_class"][c]["recall"] for c in classes}})
        singles = [r["accuracy"] for r in rows[:k]]
        print(f"mean of {k}: accuracy {rows[-1]['accuracy']:.2f} % (members {np.mean(singles):.2f} ± "
              f"{np.std(singles, ddof=1):.2f}), mean class {rows[-1]['mean_class_accuracy']:.2f} %")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"dataset": args.dataset, "split": args.split, "tta": args.tta, "rows": rows,
                       "argv": sys.argv}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
