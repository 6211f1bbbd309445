"""Post-hoc prior correction of a model's probabilities on a labelled validation split: the predicted class is
argmax(log p - tau * log prior), prior = the training split's class frequencies (logit adjustment applied after
training, Menon et al., ICLR 2021). Shows what rare-class recall costs in accuracy; nothing is written or shipped.

    python scripts/measure_prior_correction.py --model ferplus --dataset ferplus --root ../shared/data/ferplus

Never run it on a test split: a tau read off this table is chosen on the split it is measured on.
"""

from __future__ import annotations

import argparse
import json

import torch

import fdrl
from fdrl.data.loading import labelled_faces
from fdrl.data.registry import create_dataset, refuse_test_split
from fdrl.engine.report import classification_metrics
from fdrl.errors import FdrlError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="default: the shipped model (--model)")
    ap.add_argument("--model", default=None, help="a shipped model's name")
    ap.add_argument("--dataset", default="fer2013")
    ap.add_argument("--root", required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-split", default="train", help="where the class prior is counted")
    ap.add_argument("--split", default="val", help="a validation split")
    ap.add_argument("--taus", default="0,0.25,0.5,0.75,1")
    args = ap.parse_args()
    try:
        refuse_test_split(args.dataset, args.split, "choose a prior correction from these figures")
    except FdrlError as exc:
        raise SystemExit(f"measure_prior_correction: error: {exc}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = fdrl.Recognizer(args.checkpoint, model=args.model, detector="none", tta="none")
    train = create_dataset(args.dataset, args.root, args.train_split)
    counts = torch.bincount(torch.as_tensor(train.labels), minlength=len(train.classes)).float().clamp_min(1)
    # by name: the data set's class order and the model's may differ
    log_prior = torch.tensor([(counts[train.classes.index(c)] / counts.sum()).log().item() for c in rec.classes])
    images, truth = labelled_faces(args.dataset, args.root, args.split, rec.prep, rec.classes)
    faces = rec.predict_tensor(images).faces
    log_p = torch.tensor([[f.probabilities[c] for c in rec.classes] for f in faces]).clamp_min(1e-12).log()
    for tau in (float(t) for t in args.taus.split(",")):
        m = classification_metrics((log_p - tau * log_prior).argmax(1).numpy(), truth.numpy(), rec.classes)
        print(json.dumps({"tau": tau, "split": args.split, "n": len(truth),
                          "accuracy": round(100 * m["accuracy"], 2),
                          "mean_class_accuracy": round(100 * m["mean_class_accuracy"], 2),
                          "recall": {c: round(v["recall"], 3) for c, v in m["per_class"].items()},
                          "checkpoint": rec.checkpoint}), flush=True)


if __name__ == "__main__":
    main()
