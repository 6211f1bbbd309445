"""Close-ups as users send them: what the shipped model answers when a face fills the whole photo.

Each FER2013 validation face (PublicTest, the ``val`` split; never trained on) is upscaled to fill a square photo,
as a selfie or a face someone already cropped. Arms: ``--detector none`` (the whole photo is the face, as in
training), the default detector, and the default detector without its border retry
(``fdrl.faces.mtcnn_lite.BORDER_RETRY``). Reported: photos where a face was found, accuracy on those, and
correct answers out of all photos (a photo without a face counts as wrong), then the same two first arms on the
faces that only the retry finds.

    python benchmarks/closeups.py --root ../shared/data/fer2013 --per-class 50
    python benchmarks/closeups.py --per-class 50 --threads 1 --json results/closeups.json   # also a result file
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fdrl.records import run_record, write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/fer2013", help="FER2013 image-folder release")
    p.add_argument("--per-class", type=int, default=50, help="faces per class, the first by file name")
    p.add_argument("--side", type=int, default=256, help="photo side in px")
    p.add_argument("--model", default=None, help="packaged model name (default: the default packaged model)")
    p.add_argument("--tta", default="none")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the figures to this result file")
    args = p.parse_args()
    import torch
    from PIL import Image

    import fdrl
    from fdrl.faces import create_detector
    from fdrl.faces.mtcnn_lite import MTCNNLiteDetector

    torch.set_num_threads(args.threads)
    root = Path(args.root) / "test"
    if not root.is_dir():
        raise SystemExit(f"no FER2013 test folder at {root}")
    items, labels = [], {}
    for cdir in sorted(d for d in root.iterdir() if d.is_dir()):
        for path in sorted(cdir.glob("PublicTest_*.jpg"))[:args.per_class]:
            photo = Image.open(path).convert("RGB").resize((args.side, args.side), Image.BICUBIC)
            items.append((path.name, photo))
            labels[path.name] = cdir.name
    if not items:
        raise SystemExit(f"no PublicTest_*.jpg under {root}")

    rec = fdrl.Recognizer(model=args.model, tta=args.tta)  # the model loads once; the arms swap its detector
    whole, retry, plain = create_detector("none"), rec.detector, MTCNNLiteDetector(border_retry=0)

    rows: list[dict] = []

    def run(detector, name: str, photos: list, group: str = "all photos") -> set[str]:
        rec.detector = detector
        largest: dict[str, tuple[int, str]] = {}
        for f in rec.predict_images(photos).faces:
            if f.image_id not in largest or f.box[2] * f.box[3] > largest[f.image_id][0]:
                largest[f.image_id] = (f.box[2] * f.box[3], f.label)
        right = sum(labels[i] == label for i, (_, label) in largest.items())
        print(f"{name:32s} {len(photos):7d} {len(largest):13d} {right / max(1, len(largest)):12.2%} "
              f"{right / len(photos):14.2%}")
        rows.append({"photos_of": group, "arm": name.strip(), "photos": len(photos), "with_face": len(largest),
                     "right": right})
        return set(largest)

    print(f"{len(items)} FER2013 PublicTest faces filling {args.side}x{args.side} photos; model "
          f"{Path(rec.checkpoint).name}, tta {args.tta}, detector {retry.name}")
    print(f"{'arm':32s} {'photos':>7s} {'with a face':>13s} {'acc. on those':>12s} {'right of all':>14s}")
    run(whole, "detector none (whole photo)", items)
    found = run(retry, f"{retry.name} (border retry)", items)
    found_plain = run(plain, f"{retry.name}, no retry", items)
    extra = [(i, im) for i, im in items if i in found - found_plain]
    if extra:
        print(f"the {len(extra)} faces only the retry finds:")
        run(whole, "  detector none (whole photo)", extra, "found by the retry only")
        run(retry, "  border retry's crops", extra, "found by the retry only")
    if args.json:
        write_json(args.json, run_record("closeups") | {
            "model": Path(rec.checkpoint).name, "tta": args.tta, "side": args.side, "per_class": args.per_class,
            "detector": retry.name, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
