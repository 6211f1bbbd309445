"""``fdrl predict`` (images, folders, videos, camera) and ``fdrl export``."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from collections import Counter
from pathlib import Path

from ..errors import InputError
from ..media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS


def _is_video(item: str) -> bool:
    return item.isdigit() or Path(item).suffix.lower() in VIDEO_EXTENSIONS


def _count(n: int, noun: str) -> str:
    """``1 input``, ``4 inputs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _render(rows: list[dict], fmt: str, json_text: str) -> str:
    if fmt == "json":
        return json_text
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")  # the csv module's default is CRLF
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    show = [c for c in ("image_id", "frame", "face_index", "status", "x", "y", "w", "h", "score", "label",
                        "confidence") if c in cols]
    show += [c for c in cols if c.startswith("p_")]
    table = [[("" if r.get(c) is None else str(r.get(c))) for c in show] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in table]) for i, c in enumerate(show)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(show, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in table]
    return "\n".join(lines) + "\n"


def _has_image(folder: Path) -> bool:
    """Whether ``folder`` holds an image file anywhere below it (stops at the first)."""
    return any(f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file() for f in folder.rglob("*"))


def _check_folders(inputs: list[str], any_video: bool) -> None:
    """A folder without an image file is named on stderr; when nothing at all is left to read, an InputError
    (one line, exit 2, as ``fdrl data check`` does for a missing root) instead of an empty table and exit 0."""
    empty = [i for i in inputs if Path(i).is_dir() and not _has_image(Path(i))]
    if empty and len(empty) == len(inputs) and not any_video:
        raise InputError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {', '.join(empty)}")
    for folder in empty:
        print(f"fdrl predict: no image files found under {folder}", file=sys.stderr)


def predict_command(args: argparse.Namespace) -> int:
    from .recognizer import Recognizer
    from .results import PredictionResult

    videos = [i for i in args.inputs if _is_video(i)]
    images = [i for i in args.inputs if not _is_video(i)]
    _check_folders(images, bool(videos))  # before the model loads
    rec = Recognizer(args.checkpoint, detector=args.detector, device=args.device, batch_size=args.batch_size,
                     model=args.model, tta=args.tta, whole_image_max_side=args.whole_image_max_side)
    result = PredictionResult(classes=rec.classes)
    if images:
        result = rec.predict(images)
        if args.save_annotated:
            _save_annotated(result, Path(args.save_annotated))
    names = annotated_names(videos)  # clip.mp4 in two folders: two outputs
    for v in videos:
        vres = predict_video(rec, v, args.frame_stride, args.max_frames, args.save_annotated,
                             names[v].with_suffix(".mp4"))
        result.faces += vres.faces
        result.images += vres.images
    text = _render(result.rows(), args.format, result.to_json())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {_count(len(result.faces), 'face row')} for {_count(len(result.images), 'input')} to {args.out}",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    failed = result.failed
    if failed:
        print(f"{len(failed)} input(s) could not be read, e.g. {failed[0].image_id}: {failed[0].status}",
              file=sys.stderr)
    return 1 if failed else 0


def annotated_names(image_ids: list[str]) -> dict[str, Path]:
    """Output names for annotated images: each file's path relative to the folder that holds them all, stem +
    ``_annotated.jpg``, so ``col/happy/001.png`` and ``col/sad/001.png`` become ``happy/001_annotated.jpg`` and
    ``sad/001_annotated.jpg`` instead of overwriting each other; files that share a folder and a stem
    (``a.png``, ``a.jpg``) keep their extension in the name (``a_png_annotated.jpg``)."""
    full = {i: Path(os.path.abspath(i)) for i in image_ids}  # abspath, not resolve: a link keeps its own name
    if not full:
        return {}
    root = Path(os.path.commonpath(sorted({str(p.parent) for p in full.values()})))
    stems = Counter(p.with_suffix("") for p in full.values())
    names: dict[str, Path] = {}
    taken: set[Path] = set()
    for i, p in full.items():
        base = p.relative_to(root).with_name(p.name.replace(".", "_") if stems[p.with_suffix("")] > 1 else p.stem)
        name, k = base.with_name(base.name + "_annotated.jpg"), 1
        while name in taken:  # a.png, a.jpg and a_png.bmp: the last one would take a_png's name
            k += 1
            name = base.with_name(f"{base.name}_{k}_annotated.jpg")
        names[i] = name
        taken.add(name)
    return names


def _save_annotated(result, out_dir: Path) -> None:
    from ..media import read_image
    from .annotate import annotate

    by_image: dict[str, list] = {}
    for f in result.faces:
        by_image.setdefault(f.image_id, []).append(f)
    readable = [s.image_id for s in result.images if not s.status.startswith("unreadable")]
    for image_id, name in annotated_names(readable).items():
        img = annotate(read_image(image_id), by_image.get(image_id, []))
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(out_dir / name, quality=92)


def predict_video(rec, source: str, stride: int = 1, max_frames: int | None = None, save_dir: str | None = None,
                  save_name: Path | None = None):
    """Decode with OpenCV (file or camera index), classify every ``stride``-th frame, optional annotated video."""
    import cv2
    import numpy as np
    from PIL import Image

    from .annotate import annotate
    from .results import ImageStatus, PredictionResult

    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    res = PredictionResult(classes=rec.classes)
    writer = None
    try:  # both released however the loop ends (an error mid-video, Ctrl+C on a camera)
        if not cap.isOpened():
            res.images.append(ImageStatus(source, "unreadable: cannot open video/camera"))
            return res
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

        def frames():
            idx = 0
            while max_frames is None or idx < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                if idx % stride == 0:
                    yield idx, frame
                idx += 1

        t0, n = time.time(), 0
        tty = sys.stderr.isatty()
        for idx, frame, faces in rec.predict_frames(frames(), bgr=True):
            n += 1
            for f in faces:
                f.image_id = source
            res.faces += faces
            if save_dir:
                if writer is None:
                    out = Path(save_dir) / (save_name or Path(Path(source).stem + "_annotated.mp4"))
                    out.parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps / stride,
                                             (frame.shape[1], frame.shape[0]))
                img = annotate(Image.fromarray(frame[..., ::-1]), faces)
                writer.write(np.asarray(img)[..., ::-1].copy())
            rate = n / max(1e-9, time.time() - t0)
            msg = f"{source}: frame {idx + 1}/{total or '?'} {rate:.1f} frames/s"
            if tty:
                print("\r" + msg, end="", file=sys.stderr)
            elif n % 100 == 0:
                print(msg, file=sys.stderr)
        if tty:
            print(file=sys.stderr)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    res.images.append(ImageStatus(source, "ok" if res.faces else "no_face", len(res.faces)))
    return res


def export_command(args: argparse.Namespace) -> int:
    from .export import export_onnx, export_torchscript
    from .lookup import default_checkpoint

    ckpt = args.checkpoint or default_checkpoint()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    export = export_onnx if args.format == "onnx" else export_torchscript
    export(ckpt, args.out, fixed_batch=args.fixed_batch)
    batch = f"fixed batch of {args.fixed_batch}" if args.fixed_batch else "any batch size"
    print(f"exported {ckpt} to {args.out} ({args.format}, {batch})")
    return 0
