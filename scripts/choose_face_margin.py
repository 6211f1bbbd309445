"""Choose the face-crop margin of a checkpoint on its *validation* split, end to end through the detector.

Each validation face (e.g. FER2013 train/holdout) is upscaled and pasted into a larger canvas, the detector
(``--detector``, default: the one ``fdrl predict`` uses) finds it, and the crop with margin m is classified; the
margin with the best accuracy on detected faces is the one whose framing matches the training crops for that
detector's boxes. ``--compare opencv`` also runs a second detector and counts only the faces both find, so two
detectors are compared on the same faces. ``--as-is`` detects on the images as they are instead: for sets of
photos (SFEW's movie stills), where the framing around a real face is what the margin must match. Labels are
matched to the model's classes by name. Never run this on a test split.

    python scripts/choose_face_margin.py --checkpoint runs/fer2013_pair/fdrl/best.pt \
        --dataset fer2013 --root ../shared/data/fer2013 --split train/holdout [--write]
    python scripts/choose_face_margin.py --checkpoint src/fdrl/weights/fdrl_fer2013.pt --detector mtcnn_lite \
        --compare opencv --dataset fer2013 --root ../shared/data/fer2013
    python scripts/choose_face_margin.py --checkpoint src/fdrl/weights/fdrl_fer2013.pt --dataset sfew \
        --root ../shared/data/sfew --split train --as-is --samples 860
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from fdrl import Recognizer
from fdrl.checkpoint import atomic_save, read_checkpoint
from fdrl.data import create_dataset
from fdrl.data.datasets import class_indices
from fdrl.data.registry import refuse_test_split
from fdrl.errors import FdrlError
from fdrl.faces import DEFAULT_DETECTOR, DETECTORS, create_detector, crop_face


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default="fer2013")
    p.add_argument("--root", required=True)
    p.add_argument("--split", default="train/holdout")
    p.add_argument("--samples", type=int, default=600)
    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTORS, help="the boxes the margin is for")
    p.add_argument("--compare", default=None, choices=DETECTORS,
                   help="a second detector: count only the faces both find and report it too")
    p.add_argument("--margins", default="-0.1,-0.05,0.0,0.05,0.1,0.15,0.2,0.3",
                   help="fractions of the box per side; negative shrinks it")
    p.add_argument("--as-is", action="store_true",
                   help="detect on the images as they are (photos), not on faces pasted into a canvas")
    p.add_argument("--write", action="store_true", help="store the best margin in the checkpoint's preprocessing")
    args = p.parse_args()
    try:
        refuse_test_split(args.dataset, args.split, "choose the face margin")
    except FdrlError as exc:
        raise SystemExit(f"choose_face_margin: error: {exc}") from None
    ds = create_dataset(args.dataset, args.root, args.split)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(ds))[: args.samples]
    rec = Recognizer(args.checkpoint, detector=args.detector)
    detectors = {args.detector: rec.detector}
    if args.compare is not None and args.compare != args.detector:
        detectors[args.compare] = create_detector(args.compare)
    margins = [float(m) for m in args.margins.split(",")]
    crops = {(d, m): [] for d in detectors for m in margins}
    labels = []
    to_model = class_indices(ds.classes, rec.classes)  # a class the model lacks (-1) is never right
    for i in idx:
        if args.as_is:
            canvas = ds.load(int(i)).convert("RGB")
        else:
            face = ds.load(int(i)).resize((144, 144), Image.BILINEAR)
            canvas = Image.new("RGB", (320, 320), tuple(int(v) for v in rng.integers(0, 255, 3)))
            canvas.paste(face, (int(rng.integers(0, 176)), int(rng.integers(0, 176))))
        found = {name: det.detect(canvas) for name, det in detectors.items()}
        if not all(found.values()):
            continue
        labels.append(to_model[ds.labels[int(i)]])
        for (name, m), out in crops.items():
            out.append(crop_face(canvas, found[name][0], m))
    labels_t = torch.tensor(labels)
    print(f"{len(labels)}/{len(idx)} faces detected by {' and '.join(detectors)} on {args.dataset}/{args.split}")
    for name in detectors:
        best = None
        for m in margins:
            probs, _ = rec.classify(rec.face_tensor(crops[name, m]))
            acc = float((torch.from_numpy(probs).argmax(1) == labels_t).float().mean())
            print(f"{name} margin {m:.2f}: accuracy {acc * 100:.2f} %")
            best = (acc, m) if best is None or acc > best[0] else best
        print(f"{name}: best margin on validation: {best[1]}")
        if name == args.detector:
            chosen = best[1]
    if args.write:
        ck = read_checkpoint(args.checkpoint)
        ck["preprocessing"] = {**ck["preprocessing"], "face_margin": chosen}
        atomic_save(ck, args.checkpoint)
        print(f"wrote face_margin={chosen} into {args.checkpoint}")


if __name__ == "__main__":
    main()
