"""``fdrl predict``, ``fdrl export`` and ``fdrl serve``: thin wrappers over :mod:`fdrl.inference`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..faces import DEFAULT_DETECTOR
from ..inference.formats import EXPORT_FORMATS
from ..inference.packaged import DEFAULT_MODEL
from .options import add_model_choice, add_recognition_options, positive_int, positive_number, recognizer_kwargs

SERVE_PACKAGES = ("starlette", "uvicorn", "python_multipart")  # the `serve` extra, by import name


def add_parsers(sub: argparse._SubParsersAction) -> None:
    pd = sub.add_parser(
        "predict", help="expression probabilities for faces in images, folders or a video",
        epilog="Output columns: x, y, w, h: the face box in pixels; score: the face detector's confidence that the "
               "box is a face (its own scale: a probability for mtcnn, a detection weight for opencv and dlib, "
               "1.0 for --detector none), not the expression's; label, confidence: the most probable expression "
               "and its probability; p_<class>: every class's probability, in the model's class order; "
               "alpha_<j>: the weight of latent feature j.")
    pd.add_argument("inputs", nargs="+", help="image files, folders, a video file or a camera index")
    add_model_choice(pd, default_help=f" (default: {DEFAULT_MODEL})")
    add_recognition_options(pd, DEFAULT_DETECTOR)
    pd.add_argument("--format", choices=["table", "json", "csv"], default="table")
    pd.add_argument("--out", default=None, help="write results to this file instead of stdout")
    pd.add_argument("--save-annotated", default=None, metavar="DIR")
    pd.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="faces per model call")
    pd.add_argument("--frame-stride", type=positive_int, default=1, metavar="N", help="video: use every N-th frame")
    pd.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                    help="video/camera: stop after N frames (default: no limit)")
    pd.set_defaults(func=predict_command)

    ex = sub.add_parser("export", help=f"export a checkpoint to {' or '.join(EXPORT_FORMATS)}")
    ex.add_argument("--checkpoint", default=None)
    ex.add_argument("--format", choices=EXPORT_FORMATS, default=EXPORT_FORMATS[0])
    ex.add_argument("--out", required=True)
    batch = ex.add_mutually_exclusive_group()
    batch.add_argument("--fixed-batch", type=positive_int, default=None, metavar="N",
                       help="export for exactly N faces per call (default: any batch size); fdrl predict feeds such "
                            "a model in chunks of N")
    batch.add_argument("--dynamic-batch", action="store_true", help=argparse.SUPPRESS)  # the default; old scripts
    ex.set_defaults(func=export_command)

    sv = sub.add_parser("serve", help="local HTTP API (POST /v1/predict) and web page for photos and the webcam")
    add_model_choice(sv.add_mutually_exclusive_group(), default_help="")
    add_recognition_options(sv, DEFAULT_DETECTOR)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-upload-mb", type=positive_number, default=None, metavar="N",
                    help="largest request body in MiB, default 32 (larger: HTTP 413)")
    sv.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                    help="largest image in pixels, default 50000000 (checked before decoding: decompression bombs)")
    sv.add_argument("--max-pending", type=positive_int, default=None, metavar="N",
                    help="predict requests in progress at once (read, queued or running), default 16 "
                         "(more: HTTP 503 with Retry-After)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sv.set_defaults(func=serve_command)


def _is_video(item: str) -> bool:
    from ..media import VIDEO_EXTENSIONS  # numpy and PIL: not at start-up

    return item.isdigit() or Path(item).suffix.lower() in VIDEO_EXTENSIONS


def _count(n: int, noun: str) -> str:
    """``1 input``, ``4 inputs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _has_image(folder: Path) -> bool:
    """Whether ``folder`` holds an image file anywhere below it (stops at the first)."""
    from ..media import IMAGE_EXTENSIONS

    return any(f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file() for f in folder.rglob("*"))


def _check_folders(inputs: list[str], any_video: bool) -> None:
    """A folder without an image file is named on stderr; when nothing at all is left to read, an InputError
    (one line, exit 2, as ``fdrl data check`` does for a missing root) instead of an empty table and exit 0."""
    from ..media import IMAGE_EXTENSIONS

    empty = [i for i in inputs if Path(i).is_dir() and not _has_image(Path(i))]
    if empty and len(empty) == len(inputs) and not any_video:
        raise InputError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {', '.join(empty)}")
    for folder in empty:
        print(f"fdrl predict: no image files found under {folder}", file=sys.stderr)


def predict_command(args: argparse.Namespace) -> int:
    from ..inference.annotate import annotated_names, save_annotated
    from ..inference.recognizer import Recognizer
    from ..inference.results import PredictionResult, render
    from ..inference.video import predict_video

    videos = [i for i in args.inputs if _is_video(i)]
    images = [i for i in args.inputs if not _is_video(i)]
    _check_folders(images, bool(videos))  # before the model loads
    rec = Recognizer(args.checkpoint, batch_size=args.batch_size, **recognizer_kwargs(args))
    result = PredictionResult(classes=rec.classes)
    if images:
        result = rec.predict(images)
        if args.save_annotated:
            save_annotated(result, Path(args.save_annotated))
    names = annotated_names(videos)  # clip.mp4 in two folders: two outputs
    for v in videos:
        vres = predict_video(rec, v, args.frame_stride, args.max_frames, args.save_annotated,
                             names[v].with_suffix(".mp4"))
        result.faces += vres.faces
        result.images += vres.images
    text = render(result, args.format)
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


def export_command(args: argparse.Namespace) -> int:
    from ..inference.formats import export_model
    from ..inference.lookup import default_checkpoint

    ckpt = args.checkpoint or default_checkpoint()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    export_model(ckpt, args.out, args.format, fixed_batch=args.fixed_batch)
    batch = f"fixed batch of {args.fixed_batch}" if args.fixed_batch else "any batch size"
    print(f"exported {ckpt} to {args.out} ({args.format}, {batch})")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    import importlib.util

    missing = [m for m in SERVE_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        print(f"fdrl serve: error: {', '.join(missing)} not installed; pip install 'fdrl[serve]'", file=sys.stderr)
        return 2
    from dataclasses import replace

    import uvicorn

    from ..inference.recognizer import Recognizer
    from ..inference.serve import MB, Limits, create_app

    recognizer = Recognizer(args.checkpoint, **recognizer_kwargs(args))
    limits = Limits()
    if args.max_upload_mb is not None:
        limits = replace(limits, max_upload_bytes=int(args.max_upload_mb * MB))
    if args.max_pixels is not None:
        limits = replace(limits, max_pixels=args.max_pixels)
    if args.max_pending is not None:
        limits = replace(limits, max_pending=args.max_pending)
    app = create_app(recognizer, limits)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"fdrl serve: warning: listening on {args.host}: anyone who can reach it can use the model "
              "(there is no authentication)", file=sys.stderr)
    print(f"fdrl serve: {Path(recognizer.checkpoint).name} with the {recognizer.detector.name} detector at "
          f"http://{args.host}:{args.port}/ (Ctrl+C stops)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
