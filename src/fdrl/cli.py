"""``fdrl`` command line: a thin layer over the library API.

Only argparse is imported at start-up, so ``fdrl --help`` answers in a fraction of a second; each command
imports torch and friends when it runs.
"""

from __future__ import annotations

import argparse
import sys

from .errors import FdrlError
from .faces import DEFAULT_DETECTOR, DEFAULT_MARGIN, DETECTORS  # numpy and PIL, never torch
from .inference.packaged import DEFAULT_MODEL, DEFAULT_TTA, PACKAGED_MODELS, TTA_MODES, WHOLE_IMAGE_MAX_SIDE
from .reproduce.command import add_parser as add_reproduce_parser  # argparse only; its handler imports the rest


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import create_model, get_entry, list_models

    names = [args.name] if args.name else list_models()
    for name in names:
        model = create_model(name, num_classes=args.num_classes)
        n = sum(p.numel() for p in model.parameters())
        trunk = sum(p.numel() for p in model.backbone.parameters())
        print(f"{name:20s} {n / 1e6:6.2f} M parameters (trunk {trunk / 1e6:.2f} M, heads {(n - trunk) / 1e6:.3f} M)"
              f"  K={args.num_classes}  {get_entry(name).description}")
        if args.name:
            print(model.config)
    if not args.name:
        from .inference.lookup import describe_packaged, packaged_checkpoint

        for name in PACKAGED_MODELS:
            try:
                where, about = str(packaged_checkpoint(name)), describe_packaged(name)
            except FdrlError as exc:  # a listing shows a missing file instead of failing
                where, about = f"missing ({exc})", ""
            print(f"shipped model {name!r}: {where} (fdrl predict --model {name})")
            if about:
                print(f"    {about}")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    if args.name:  # the whole resolved config: torch is imported only here
        from .config import dump_yaml, load_config

        print(dump_yaml(load_config(args.name, args.overrides, baseline=args.baseline)), end="")
        return 0
    from .recipes import describe, list_recipes

    names = list_recipes()
    width = max(map(len, names))
    for name in names:
        print(f"{name:{width}s}  {describe(name)}")
    print("\nfdrl train --recipe NAME [--baseline] --set data.root=PATH --out RUN; every key: fdrl recipes NAME")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .engine.runner import train_command

    return train_command(args)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .engine.runner import eval_command

    return eval_command(args)


def _cmd_explain(args: argparse.Namespace) -> int:
    from .engine.runner import explain_command

    return explain_command(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .engine.runner import demo_command

    return demo_command(args)


def _cmd_data(args: argparse.Namespace) -> int:
    from .data.commands import data_command

    return data_command(args)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare_command

    return prepare_command(args)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .inference.commands import predict_command

    return predict_command(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from .inference.commands import export_command

    return export_command(args)


SERVE_PACKAGES = ("starlette", "uvicorn", "python_multipart")  # the `serve` extra, by import name


def _cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    missing = [m for m in SERVE_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        print(f"fdrl serve: error: {', '.join(missing)} not installed; pip install 'fdrl[serve]'", file=sys.stderr)
        return 2
    from .inference.serve import serve_command

    return serve_command(args)


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


DEVICE_HELP = "cpu (default), cuda, cuda:N, or auto: a GPU when there is one, as fdrl eval picks it"


def _recognition_options(p: argparse.ArgumentParser) -> None:
    """What `fdrl predict` and `fdrl serve` pass alike to the Recognizer: test-time views and the whole-image rule."""
    p.add_argument("--tta", default=DEFAULT_TTA, choices=TTA_MODES,
                   help=f"test-time views averaged per face (default: {DEFAULT_TTA})")
    p.add_argument("--whole-image-max-side", type=int, default=WHOLE_IMAGE_MAX_SIDE, metavar="PX",
                   help="an image no larger than this (px, longer side) in which no face is found is read whole "
                        f"as one face crop (status whole_image; default {WHOLE_IMAGE_MAX_SIDE}; 0: never)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fdrl", description="Facial expression recognition with FDRL (CVPR 2021).")
    p.add_argument("--version", action="version", version="fdrl 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    m = sub.add_parser("models", help="list the registered models and their parameter counts")
    m.add_argument("name", nargs="?", help="one model: also print its full config")
    m.add_argument("--num-classes", type=int, default=7)
    m.set_defaults(func=_cmd_models)

    d = sub.add_parser("demo", help="generate the synthetic set, train FDRL on it, evaluate and write a report")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    d.set_defaults(func=_cmd_demo)

    r = sub.add_parser("recipes", help="list the training recipes shipped in the package")
    r.add_argument("name", nargs="?", help="one recipe: print its resolved config (every key, as a run stores it)")
    r.add_argument("--baseline", action="store_true", help="the recipe's baseline twin")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    r.set_defaults(func=_cmd_recipes)

    t = sub.add_parser("train", help="train a model from a packaged recipe or a YAML config")
    source = t.add_mutually_exclusive_group()
    source.add_argument("--recipe", metavar="NAME", help="a recipe shipped in the package (fdrl recipes lists them)")
    source.add_argument("--config", metavar="FILE", help="your own YAML file (it may `inherit:` a recipe by name)")
    t.add_argument("--baseline", action="store_true",
                   help="train the baseline twin: the same recipe, trunk and data, one linear layer as the head")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5 --set model.delta=0.3")
    t.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, report)")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt exactly")
    t.add_argument("--folds", type=int, default=None, help="k-fold protocol (ckplus, mmi, oulu_casia)")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a data set split and write a report")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--dataset", required=True)
    e.add_argument("--root", default=None)
    e.add_argument("--split", default="test")
    e.add_argument("--out", required=True)
    e.add_argument("--tta", choices=["none", "flip", "tencrop"], default="none")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. --option label_mode=majority")
    e.add_argument("--face-detector", default=None, choices=DETECTORS,
                   help="crop faces first (default: the detector the checkpoint was trained with)")
    e.set_defaults(func=_cmd_eval)

    xp = sub.add_parser("explain", help="what each latent feature looks at: per-class saliency maps of an FDRL "
                                        "checkpoint (PNG grid and .npz)")
    xp.add_argument("--checkpoint", required=True, help="an FDRL checkpoint (a baseline has no latent features)")
    xp.add_argument("--dataset", required=True)
    xp.add_argument("--root", default=None)
    xp.add_argument("--split", default="val", help="a validation split (default: val)")
    xp.add_argument("--out", required=True, help="folder for latent_maps.png and latent_maps.npz")
    xp.add_argument("--per-class", type=_positive_int, default=100, metavar="N",
                    help="faces averaged per class, a seeded random choice (default: 100)")
    xp.add_argument("--target", choices=["alpha", "latent_norm"], default="alpha",
                    help="alpha: the importance weight alpha_j; latent_norm: ||l_j|| (default: alpha)")
    xp.add_argument("--method", choices=["grad", "grad_x_input", "smoothgrad"], default="grad",
                    help="saliency: |gradient|, |gradient x input| or SmoothGrad (default: grad)")
    xp.add_argument("--device", default="auto")
    xp.add_argument("--batch-size", type=_positive_int, default=64)
    xp.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                    help="dataset option, e.g. --option label_mode=majority")
    xp.add_argument("--face-detector", default=None, choices=DETECTORS,
                    help="crop faces first (default: the detector the checkpoint was trained with)")
    xp.set_defaults(func=_cmd_explain)

    da = sub.add_parser("data", help="list data sets or check one on disk")
    dsub = da.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.add_parser("list", help="every registered data set")
    ck = dsub.add_parser("check", help="per-split, per-class counts and skipped files")
    ck.add_argument("--dataset", required=True)
    ck.add_argument("--root", default=None)
    ck.add_argument("--splits", default=None, help="comma-separated splits (default: the data set's own)")
    ck.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE")
    ck.add_argument("--face-detector", default="none", choices=DETECTORS,
                    help="also detect a face in every image and count those without one")
    ck.add_argument("--face-margin", type=float, default=DEFAULT_MARGIN)
    da.set_defaults(func=_cmd_data)

    pr = sub.add_parser("prepare", help="detect, align and crop faces of a raw image folder")
    pr.add_argument("src")
    pr.add_argument("dst")
    pr.add_argument("--size", type=int, default=224)
    pr.add_argument("--detector", default="opencv", choices=DETECTORS)
    pr.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    pr.set_defaults(func=_cmd_prepare)

    pd = sub.add_parser(
        "predict", help="expression probabilities for faces in images, folders or a video",
        epilog="Output columns: x, y, w, h: the face box in pixels; score: the face detector's confidence that the "
               "box is a face (its own scale: a probability for mtcnn, a detection weight for opencv and dlib, "
               "1.0 for --detector none), not the expression's; label, confidence: the most probable expression "
               "and its probability; p_<class>: every class's probability, in the model's class order; "
               "alpha_<j>: the weight of latent feature j.")
    pd.add_argument("inputs", nargs="+", help="image files, folders, a video file or a camera index")
    pd.add_argument("--checkpoint", default=None,
                    help="fdrl .pt, exported .onnx or TorchScript (default: the shipped model)")
    pd.add_argument("--model", default=None, metavar="NAME",
                    help=f"a shipped model instead of --checkpoint: {', '.join(PACKAGED_MODELS)} "
                         f"(default: {DEFAULT_MODEL})")
    _recognition_options(pd)
    pd.add_argument("--format", choices=["table", "json", "csv"], default="table")
    pd.add_argument("--out", default=None, help="write results to this file instead of stdout")
    pd.add_argument("--save-annotated", default=None, metavar="DIR")
    pd.add_argument("--detector", default=None, choices=DETECTORS,
                    help=f"default: the detector the checkpoint was trained with, else {DEFAULT_DETECTOR}")
    pd.add_argument("--batch-size", type=_positive_int, default=64, metavar="N", help="faces per model call")
    pd.add_argument("--device", default="cpu", help=DEVICE_HELP)
    pd.add_argument("--frame-stride", type=_positive_int, default=1, metavar="N", help="video: use every N-th frame")
    pd.add_argument("--max-frames", type=_positive_int, default=None, metavar="N",
                    help="video/camera: stop after N frames (default: no limit)")
    pd.set_defaults(func=_cmd_predict)

    ex = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript")
    ex.add_argument("--checkpoint", default=None)
    ex.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    ex.add_argument("--out", required=True)
    batch = ex.add_mutually_exclusive_group()
    batch.add_argument("--fixed-batch", type=_positive_int, default=None, metavar="N",
                       help="export for exactly N faces per call (default: any batch size); fdrl predict feeds such "
                            "a model in chunks of N")
    batch.add_argument("--dynamic-batch", action="store_true", help=argparse.SUPPRESS)  # the default; old scripts
    ex.set_defaults(func=_cmd_export)

    sv = sub.add_parser("serve", help="local HTTP API (POST /v1/predict) and web page for photos and the webcam")
    model = sv.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", default=None,
                       help="fdrl .pt, exported .onnx or TorchScript (default: the shipped model)")
    model.add_argument("--model", default=None, metavar="NAME",
                       help=f"a model shipped in the package: {', '.join(PACKAGED_MODELS)}")
    _recognition_options(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-upload-mb", type=_positive_number, default=None, metavar="N",
                    help="largest request body in MiB, default 32 (larger: HTTP 413)")
    sv.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                    help="largest image in pixels, default 50000000 (checked before decoding: decompression bombs)")
    sv.add_argument("--max-pending", type=_positive_int, default=None, metavar="N",
                    help="predict requests in progress at once (read, queued or running), default 16 "
                         "(more: HTTP 503 with Retry-After)")
    sv.add_argument("--detector", default=None, choices=DETECTORS,
                    help=f"default: the detector the checkpoint was trained with, else {DEFAULT_DETECTOR}")
    sv.add_argument("--device", default="cpu", help=DEVICE_HELP)
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sv.set_defaults(func=_cmd_serve)

    add_reproduce_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if args.command == "data" and not args.data_command:
        parser.parse_args(["data", "--help"])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except FdrlError as exc:  # the input is wrong: one clear line; anything else is a bug and keeps its traceback
        print(f"fdrl {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
