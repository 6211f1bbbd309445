"""Face detectors side by side: recall, false detections, eye alignment rate and time per photo.

Photos are composed from real FER2013 test faces (six per 1280x720 photo, one per cell of a 3x2 grid, at a random
size and position inside the cell, on a textured backdrop), so every true face position is known. A detection
counts as a hit when its centre lies inside a pasted face that no other detection has claimed.

Portraits are single real faces at 256x256: half are a FER2013 face upscaled to fill the frame (hair, shoulders
and background as in the original crop), half a face of 128-192 px on a plain or textured 256x256 backdrop. Any
detection besides the one hit on the face is a false face (each gets its own expression row in ``fdrl predict``).

    python benchmarks/detectors.py --root ../shared/data/fer2013 --photos 20 --portraits 100
    python benchmarks/detectors.py --sizes 96 --photos 20      # recall at 96 px faces only
    python benchmarks/detectors.py --portraits 0 --rounds 5   # time: median of 5 rounds, detectors taking turns
    python benchmarks/detectors.py --detectors mtcnn          # where facenet-pytorch is installed
    python benchmarks/detectors.py --detectors mtcnn_lite:20,mtcnn_lite:40   # smallest face searched, in px
    python benchmarks/detectors.py --detectors mtcnn_lite:40:0.4 --sizes 96   # and P-Net's threshold
    python benchmarks/detectors.py --detectors mtcnn_lite,mtcnn_lite:40:0.6:0  # without the border retry
    python benchmarks/detectors.py --detectors mtcnn_lite:40:0.6:0.25:0.8      # a denser pyramid
    python benchmarks/detectors.py --detectors mtcnn_lite:40:0.6:0.25:0.709:0  # no search for tilted faces
    python benchmarks/detectors.py --detectors mtcnn_lite:40:0.6:0.25:0.709:30:64  # turned 30 deg, faces >= 64 px
    python benchmarks/detectors.py --detectors mtcnn_lite:40:0.6:0.25:0.709:45:96:off  # P-Net 0.6 on every level
    python benchmarks/detectors.py --detectors mtcnn_lite:40:0.6:0.25:0.709:0:96:64/0.3:0  # no contrast retry
    python benchmarks/detectors.py --photos 20 --json results/detectors.json   # also a result file for the docs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fdrl.records import run_record, write_json

CANVAS = (1280, 720)
GRID = (3, 2)


def compose(faces: list[Path], sizes: list[int], rng: np.random.Generator) -> tuple[Image.Image, list[tuple]]:
    """A photo with one face per grid cell; returns it and the pasted boxes (x, y, side)."""
    w, h = CANVAS
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 0.1 + 60) % 255, (yy * 0.15 + 90) % 255, np.full_like(xx, 130)], -1)
    noise = rng.normal(0, 12, (h, w, 3))
    canvas = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    cw, ch = w // GRID[0], h // GRID[1]
    boxes = []
    for i, path in enumerate(faces):
        side = int(rng.choice(sizes))
        cx, cy = (i % GRID[0]) * cw, (i // GRID[0]) * ch
        x = cx + int(rng.integers(0, max(1, cw - side)))
        y = cy + int(rng.integers(0, max(1, ch - side)))
        canvas.paste(Image.open(path).convert("RGB").resize((side, side), Image.BILINEAR), (x, y))
        boxes.append((x, y, side))
    return canvas, boxes


def portrait(face: Path, i: int, rng: np.random.Generator) -> tuple[Image.Image, list[tuple]]:
    """A 256x256 single-face portrait: the face filling the frame (even ``i``) or pasted on a backdrop (odd)."""
    img = Image.open(face).convert("RGB")
    if i % 2 == 0:
        return img.resize((256, 256), Image.BICUBIC), [(0, 0, 256)]
    side = int(rng.integers(128, 193))
    if i % 4 == 1:
        canvas = Image.new("RGB", (256, 256), tuple(int(c) for c in rng.integers(40, 220, 3)))
    else:
        canvas = Image.fromarray(rng.integers(0, 256, (256, 256, 3)).astype(np.uint8)).resize((256, 256))
        yy, xx = np.mgrid[0:256, 0:256]
        stripes = (np.sin(xx / 9.0 + yy / 23.0) * 60 + 128)[..., None]
        canvas = Image.fromarray(np.clip(0.5 * np.asarray(canvas) + 0.5 * stripes, 0, 255).astype(np.uint8))
    x, y = (int(v) for v in rng.integers(0, 257 - side, 2))
    canvas.paste(img.resize((side, side), Image.BICUBIC), (x, y))
    return canvas, [(x, y, side)]


def score(faces, boxes) -> tuple[set[int], int, int]:
    """(indices of the pasted faces found, false detections, hits with both eyes found)."""
    claimed, hits, eyes = set(), 0, 0
    for f in faces:
        x, y, w, h = f.box
        cx, cy = x + w / 2, y + h / 2
        match = [i for i, (bx, by, s) in enumerate(boxes) if bx <= cx <= bx + s and by <= cy <= by + s
                 and i not in claimed]
        if match:
            claimed.add(match[0])
            hits += 1
            eyes += f.eyes is not None
    return claimed, len(faces) - hits, eyes


def main() -> None:
    from fdrl.errors import DetectorError

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/fer2013", help="FER2013 image-folder release")
    p.add_argument("--photos", type=int, default=20)
    p.add_argument("--sizes", default="96,160,240", help="face sides in px, drawn at random")
    p.add_argument("--portraits", type=int, default=100, help="single-face 256x256 portraits (0: skip)")
    p.add_argument("--detectors", default="opencv,dlib,mtcnn,mtcnn_lite,mtcnn_lite_tilted",
                   help="names of fdrl.faces.DETECTORS; mtcnn_lite:N[:P[:B[:F[:T[:TN[:LW/LP[:C]]]]]]] searches "
                        "faces from N px (default fdrl.faces.mtcnn_lite.MIN_FACE_SIZE) with P-Net threshold P, "
                        "border retry B, pyramid factor F, tilted faces from TN px on the photo turned by +-T "
                        "degrees, and P-Net threshold LP on windows of at least LW px (:LW/LP, or :off), "
                        "contrast retry C (0: off)")
    p.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3,
                   help="times each detector goes over the photos, detectors taking turns; ms/photo is the median")
    p.add_argument("--json", default=None, help="also write the figures to this result file")
    args = p.parse_args()
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    pool = sorted((Path(args.root) / "test").glob("*/PublicTest_*.jpg"))
    if not pool:
        raise SystemExit(f"no FER2013 test images under {args.root}/test")
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    photos = [compose([pool[i] for i in rng.choice(len(pool), 6, replace=False)], sizes, rng)
              for _ in range(args.photos)]
    singles = [portrait(pool[j], i, rng) for i, j in enumerate(rng.choice(len(pool), args.portraits, replace=False))]
    total = sum(len(b) for _, b in photos)
    print(f"{args.photos} photos {CANVAS[0]}x{CANVAS[1]}, {total} real FER2013 faces at {sizes} px; "
          f"{len(singles)} single-face portraits 256x256; seed {args.seed}, {args.threads} threads; "
          f"ms/photo: median of {args.rounds} rounds, detectors taking turns")
    print(f"{'detector':10s} {'recall':>7s} " + " ".join(f"{f'@{s}px':>7s}" for s in sizes)
          + f" {'false det.':>10s} {'eyes found':>10s} {'ms/photo':>9s} {'portraits found':>15s} "
          f"{'false on portraits':>18s} {'ms/portrait':>11s}")
    detectors, unavailable = [], {}
    for name in args.detectors.split(","):
        try:
            detectors.append((name, build(name)))
        except DetectorError as exc:
            print(f"{name:10s} unavailable: {exc}")
            unavailable[name] = str(exc)
    rows = {}
    for name, det in detectors:
        det.detect(photos[0][0])  # warm-up (model loading, first-call allocation)
        found = {s: [0, 0] for s in sizes}  # side -> [found, pasted]
        false = eyes = 0
        seconds = 0.0
        for photo, boxes in photos:
            t = time.perf_counter()
            faces = det.detect(photo)
            seconds += time.perf_counter() - t
            hit, f, e = score(faces, boxes)
            false, eyes = false + f, eyes + e
            for i, (_, _, side) in enumerate(boxes):
                found[side][0] += i in hit
                found[side][1] += 1
        single_hits = single_false = 0
        single_seconds = 0.0
        for photo, boxes in singles:
            t = time.perf_counter()
            faces = det.detect(photo)
            single_seconds += time.perf_counter() - t
            hit, f, _ = score(faces, boxes)
            single_hits, single_false = single_hits + len(hit), single_false + f
        rows[name] = (found, false, eyes, [1000 * seconds / len(photos)], single_hits, single_false, single_seconds)
    # Later rounds only time the photos, one detector after the other in each round, so a machine that drifts
    # (turbo, other tenants) slows every detector alike; the median round is reported.
    for _ in range(args.rounds - 1):
        for name, det in detectors:
            t = time.perf_counter()
            for photo, _ in photos:
                det.detect(photo)
            rows[name][3].append(1000 * (time.perf_counter() - t) / len(photos))
    records = []
    for name, (found, false, eyes, ms, single_hits, single_false, single_seconds) in rows.items():
        hits = sum(v[0] for v in found.values())
        by_size = " ".join(f"{v[0] / max(1, v[1]):7.1%}" for v in found.values())
        on_portraits = (f"{single_hits:>7d} of {len(singles):<4d} {single_false:18d} "
                        f"{1000 * single_seconds / len(singles):11.1f}" if singles else f"{'-':>15s}")
        print(f"{name:10s} {hits / total:7.1%} {by_size} {false:10d} {eyes / max(1, hits):10.1%} "
              f"{float(np.median(ms)):9.1f} {on_portraits}")
        records.append({"detector": name, "found": {str(s): v for s, v in found.items()}, "false": false,
                        "eyes": eyes, "ms_per_photo": float(np.median(ms)), "ms_rounds": ms,
                        "portraits_found": single_hits, "false_on_portraits": single_false,
                        "ms_per_portrait": 1000 * single_seconds / len(singles) if singles else None})
    if args.json:  # found: face side -> [found, pasted]
        write_json(args.json, run_record("detectors") | {
            "photos": args.photos, "portraits": len(singles), "sizes": sizes, "seed": args.seed,
            "threads": args.threads, "rounds": args.rounds, "rows": records, "unavailable": unavailable})


def build(name: str):
    """A detector from its ``--detectors`` name (see the option's help for the ``mtcnn_lite:...`` fields)."""
    from fdrl.faces import create_detector
    from fdrl.faces.mtcnn_lite import STAGE_THRESHOLDS, MTCNNLiteDetector

    base, *opts = name.split(":")
    if base != "mtcnn_lite" or not opts:
        return create_detector(name)
    kw: dict = {"min_face_size": int(opts[0])}
    if len(opts) > 1:
        kw["thresholds"] = (float(opts[1]), *STAGE_THRESHOLDS[1:])
    for key, value in zip(("border_retry", "factor", "turn_angle"), opts[2:5], strict=False):
        kw[key] = float(value)
    if len(opts) > 5:
        kw["turn_min_face"] = int(opts[5])
    if len(opts) > 6:  # P-Net's threshold on windows of at least W px: W/P, or "off"
        kw["large_windows"] = None if opts[6] == "off" else (int(opts[6].split("/")[0]), float(opts[6].split("/")[1]))
    if len(opts) > 7:
        kw["contrast_retry"] = float(opts[7])
    return MTCNNLiteDetector(**kw)


if __name__ == "__main__":
    main()
