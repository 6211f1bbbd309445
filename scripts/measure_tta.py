"""Effect and cost of test-time augmentation for a model on a labelled validation split (default: FER2013's
``train/holdout``, the validation split of runs that train on ``train/fit``). Prints one JSON line per TTA mode.
Test splits are refused: these figures choose the TTA default (FER2013's PublicTest is a test split here).

    python scripts/measure_tta.py --model ferplus --dataset ferplus --root ../shared/data/ferplus --split val
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import fdrl
from fdrl.data.loading import labelled_faces
from fdrl.data.registry import refuse_test_split
from fdrl.engine.report import classification_metrics
from fdrl.errors import FdrlError
from fdrl.literals import TTA_MODES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="default: the shipped model (--model)")
    ap.add_argument("--model", default=None, help="a shipped model's name")
    ap.add_argument("--dataset", default="fer2013")
    ap.add_argument("--root", required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--split", default="train/holdout", help="a validation split (test splits are refused)")
    args = ap.parse_args()
    try:
        refuse_test_split(args.dataset, args.split, "choose the TTA default from these figures")
    except FdrlError as exc:
        raise SystemExit(f"measure_tta: error: {exc}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    recs = {m: fdrl.Recognizer(args.checkpoint, model=args.model, detector="none", tta=m) for m in TTA_MODES}
    images, truth = labelled_faces(args.dataset, args.root, args.split, recs["none"].prep, recs["none"].classes)
    # Cost: the modes take turns on the same 256 faces, 5 rounds, median per mode, so that a machine whose load
    # changes during the run (other jobs) biases no mode.
    sample, times = images[:256], {m: [] for m in TTA_MODES}
    for _ in range(5):
        for mode, rec in recs.items():
            t0 = time.perf_counter()
            rec.predict_tensor(sample)
            times[mode].append((time.perf_counter() - t0) / len(sample))
    for mode, rec in recs.items():
        res = rec.predict_tensor(images)
        dt = sorted(times[mode])[2] * len(images)
        pred = torch.tensor([rec.classes.index(f.label) for f in res.faces])
        m = classification_metrics(pred.numpy(), truth.numpy(), rec.classes)
        print(json.dumps({"tta": mode, "split": args.split, "n": len(pred), "accuracy": round(100 * m["accuracy"], 2),
                          "mean_class_accuracy": round(100 * m["mean_class_accuracy"], 2),
                          "ms_per_face": round(1000 * dt / len(pred), 3), "threads": torch.get_num_threads(),
                          "checkpoint": rec.checkpoint}), flush=True)


if __name__ == "__main__":
    main()
