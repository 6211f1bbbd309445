"""Inference speed of what ``fdrl.Recognizer`` runs: faces/s and ms per face at batch 1 and 64 through the
Recognizer's own classifier (``Recognizer.classify``: the checkpoint's network as the Recognizer loads it, in float32,
with the test-time augmentation asked for), the same for its ONNX export (onnxruntime, where the ``export`` extra is
installed), and a bare ResNet-18 baseline network at the same input size and views; plus the end-to-end time per
photo of ``Recognizer.predict`` with the package's default face detector (its own MTCNN, ``mtcnn_lite``).

    python benchmarks/inference.py                              # the packaged model, tta none
    python benchmarks/inference.py --tta flip --threads 1 --json results/inference.json
    python benchmarks/inference.py --checkpoint runs/x/best.pt --photo group.jpg

The face batch is made by the Recognizer's own preprocessing (``face_tensor``) from face-sized crops of the photo;
the photo is ``--photo``, else six FER2013 PublicTest faces pasted on a 1280x720 canvas (``--fer-root``), else six
faces drawn by the synthetic set; the end-to-end line says how many faces the detector found.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fdrl.records import run_record, write_json

ROOT = Path(__file__).resolve().parents[1]


def faces_per_second(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return repeats * len(x) / (time.perf_counter() - t)


def compose_photo(fer_root: Path, out: Path) -> tuple[Path, str]:
    """A 1280x720 photo with six faces at 160 px: FER2013 PublicTest faces where its folders are there, else faces
    drawn by the synthetic set."""
    faces = [Image.open(p).convert("RGB") for p in sorted((fer_root / "test").glob("*/PublicTest_*.jpg"))[:6]]
    what = "six FER2013 PublicTest faces"
    if len(faces) < 6:
        from fdrl.data.synthetic import draw_face

        rng = np.random.default_rng(0)
        faces = [Image.fromarray(draw_face(rng, i, size=160)).convert("RGB") for i in range(6)]
        what = "six drawn (synthetic) faces"
    canvas = Image.new("RGB", (1280, 720), (90, 120, 140))
    for i, face in enumerate(faces):
        canvas.paste(face.resize((160, 160)), (80 + 400 * (i % 3), 120 + 320 * (i // 3)))
    canvas.save(out, quality=95)
    return out, f"1280x720, {what} pasted at 160 px"


def main() -> None:
    import fdrl
    from fdrl.data.preprocess import tta_views
    from fdrl.inference.lookup import default_checkpoint
    from fdrl.inference.packaged import TTA_MODES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="an fdrl checkpoint (default: the packaged model)")
    p.add_argument("--tta", default="none", choices=TTA_MODES, help="the Recognizer's test-time augmentation")
    p.add_argument("--repeats", type=int, default=5, help="timed passes at batch 64 (batch 1: 20 times as many)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--photo", default=None, help="a photo for the end-to-end time (default: composed, see above)")
    p.add_argument("--fer-root", default=str(ROOT.parent / "shared" / "data" / "fer2013"))
    p.add_argument("--json", default=None, help="also write the figures to this result file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = args.checkpoint or str(default_checkpoint())
    rec = fdrl.Recognizer(ckpt, detector="none", tta=args.tta)
    size = rec.prep.input_size
    base = fdrl.create_model("baseline_resnet18", num_classes=len(rec.classes)).eval()

    def baseline(x: torch.Tensor) -> None:  # the bare network over the same views, as classify runs them
        with torch.no_grad():
            for view in tta_views(x, args.tta):
                base(view)

    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        if args.photo:
            photo, what = Path(args.photo), args.photo
        else:
            photo, what = compose_photo(Path(args.fer_root), Path(tmp) / "photo.jpg")
        with Image.open(photo) as im:
            im = im.convert("RGB")
            side = min(im.size) // 4
            crops = [im.crop((x, y, x + side, y + side)) for x in range(0, im.width - side + 1, side)
                     for y in range(0, im.height - side + 1, side)]
        runtimes = [("fdrl (pytorch)", rec)]
        try:
            from fdrl.inference.export import export_onnx

            onnx_path = Path(tmp) / "m.onnx"
            export_onnx(ckpt, onnx_path)
            runtimes.append(("fdrl (onnxruntime)", fdrl.Recognizer(onnx_path, detector="none", tta=args.tta)))
        except ImportError as exc:
            notes.append(f"onnxruntime row skipped: {exc} (pip install -e '.[export]')")
        for bs in (1, 64):
            x = rec.face_tensor([crops[i % len(crops)] for i in range(bs)])
            reps = args.repeats * (20 if bs == 1 else 1)
            for name, fn in [*((n, r.classify) for n, r in runtimes), ("baseline resnet18 (pytorch)", baseline)]:
                r = faces_per_second(fn, x, reps)
                rows.append({"model": name, "batch": bs, "tta": args.tta, "faces_per_s": r, "ms_per_face": 1000 / r})
        e2e = fdrl.Recognizer(ckpt, tta=args.tta)  # the default detector
        e2e.predict(photo)
        t = time.perf_counter()
        for _ in range(args.repeats):
            res = e2e.predict(photo)
        per_photo = (time.perf_counter() - t) / args.repeats
    print(f"CPU inference, torch {torch.__version__}, {torch.get_num_threads()} threads, input {size} px, "
          f"tta {args.tta}, checkpoint {ckpt}")
    print(f"{'model':30s} {'batch':>5s} {'faces/s':>10s} {'ms/face':>9s} {'vs baseline':>12s}")
    for r in rows:
        b = next(x["faces_per_s"] for x in rows if x["model"].startswith("baseline") and x["batch"] == r["batch"])
        print(f"{r['model']:30s} {r['batch']:5d} {r['faces_per_s']:10.1f} {r['ms_per_face']:9.2f} "
              f"{r['faces_per_s'] / b:12.2f}")
    print(f"end to end (read + {e2e.detector.name} detection + classification), {what}: {1000 * per_photo:.1f} "
          f"ms/photo, {len(res.faces)} face(s) found")
    for note in notes:
        print(note)
    if args.json:
        write_json(args.json, run_record("inference") | {
            "threads": torch.get_num_threads(), "checkpoint": Path(ckpt).name, "input_size": size, "tta": args.tta,
            "repeats": args.repeats, "rows": rows, "notes": notes,
            "end_to_end": {"detector": e2e.detector.name, "photo": what, "ms_per_photo": 1000 * per_photo,
                           "faces": len(res.faces)}})


if __name__ == "__main__":
    main()
