"""Inference speed on CPU: faces/s and ms per face at batch 1 and 64 for the PyTorch FDRL model, its ONNX
export (onnxruntime) and the bare ResNet-18 baseline at the same input size; plus the end-to-end photo rate
including OpenCV face detection.

    python benchmarks/inference.py                      # the packaged model
    python benchmarks/inference.py --checkpoint runs/x/best.pt
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def rate(fn, x, repeats: int) -> float:
    fn(x)
    t = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return repeats * x.shape[0] / (time.perf_counter() - t)


def main() -> None:
    import fdrl
    from fdrl.inference.export import export_onnx
    from fdrl.inference.lookup import default_checkpoint
    from fdrl.inference.recognizer import Recognizer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--photo", default=None, help="a photo for the end-to-end rate (default: a composed one)")
    args = p.parse_args()
    ckpt = args.checkpoint or str(default_checkpoint())
    loaded = fdrl.load_checkpoint(ckpt)
    size = loaded.preprocessing.input_size
    model = loaded.model.eval()
    base = fdrl.create_model("baseline_resnet18", num_classes=len(loaded.classes)).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "m.onnx"
        export_onnx(ckpt, onnx_path)
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            for bs in (1, 64):
                x = torch.randn(bs, 3, size, size)
                reps = args.repeats * (20 if bs == 1 else 1)
                for name, fn in (("fdrl (pytorch)", model), ("fdrl (onnxruntime)",
                                                              lambda t: sess.run(None, {"images": t.numpy()})),
                                 ("baseline resnet18 (pytorch)", base)):
                    rows.append((name, bs, rate(fn, x, reps)))
        rec = Recognizer(ckpt, detector="opencv")
        if args.photo:
            photo = Path(args.photo)
        else:
            photo = Path(tmp) / "photo.jpg"
            rng = np.random.default_rng(0)
            Image.fromarray(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)).save(photo)
        rec.predict(photo)
        t = time.perf_counter()
        for _ in range(args.repeats):
            res = rec.predict(photo)
        per_photo = (time.perf_counter() - t) / args.repeats
    print(f"CPU inference, torch {torch.__version__}, {torch.get_num_threads()} threads, input {size}px, "
          f"checkpoint {ckpt}")
    print(f"{'model':30s} {'batch':>5s} {'faces/s':>10s} {'ms/face':>9s} {'vs baseline':>12s}")
    for name, bs, r in rows:
        b = next(rr for n, bb, rr in rows if n.startswith("baseline") and bb == bs)
        print(f"{name:30s} {bs:5d} {r:10.1f} {1000 / r:9.2f} {r / b:12.2f}")
    print(f"end to end (read + OpenCV detection + classification), {photo.name}: {1000 * per_photo:.1f} ms/photo, "
          f"{len(res.faces)} face(s)")


if __name__ == "__main__":
    main()
