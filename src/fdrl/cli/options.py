"""Argument types and the argument groups several commands share, defined once so their names, defaults and help
read the same everywhere. Only argparse and torch-free tables are imported here."""

from __future__ import annotations

import argparse

from ..faces import DETECTORS
from ..inference.packaged import DEFAULT_TTA, PACKAGED_MODELS, TTA_MODES, WHOLE_IMAGE_MAX_SIDE

DEVICE_HELP = "cpu (default), cuda, cuda:N, or auto: a GPU when there is one, as fdrl eval picks it"


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def add_overrides(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--set key=value``, repeatable: a config key over the recipe's value."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_dataset_options(p: argparse.ArgumentParser) -> None:
    """``--option key=value``, repeatable: a data set's own option (``fdrl data list`` names the data sets)."""
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. --option label_mode=majority")


def add_split_source(p: argparse.ArgumentParser, split: str, split_help: str | None = None) -> None:
    """Which labelled faces a checkpoint is run on (``fdrl eval``, ``fdrl explain``): data set, root, split, its
    options, and the detector that crops them."""
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", default=None)
    p.add_argument("--split", default=split, help=split_help)
    add_dataset_options(p)
    p.add_argument("--face-detector", default=None, choices=DETECTORS,
                   help="crop faces first (default: the detector the checkpoint was trained with)")


def add_model_choice(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, default_help: str) -> None:
    """``--checkpoint FILE`` or ``--model NAME`` (a shipped model): what ``predict`` and ``serve`` run."""
    p.add_argument("--checkpoint", default=None,
                   help="fdrl .pt, exported .onnx or TorchScript (default: the shipped model)")
    p.add_argument("--model", default=None, metavar="NAME",
                   help=f"a shipped model instead of --checkpoint: {', '.join(PACKAGED_MODELS)}{default_help}")


def add_recognition_options(p: argparse.ArgumentParser, default_detector: str) -> None:
    """What ``fdrl predict`` and ``fdrl serve`` pass alike to the Recognizer: detector, test-time views, the
    whole-image rule and the device."""
    p.add_argument("--detector", default=None, choices=DETECTORS,
                   help=f"default: the detector the checkpoint was trained with, else {default_detector}")
    p.add_argument("--tta", default=DEFAULT_TTA, choices=TTA_MODES,
                   help=f"test-time views averaged per face (default: {DEFAULT_TTA})")
    p.add_argument("--whole-image-max-side", type=int, default=WHOLE_IMAGE_MAX_SIDE, metavar="PX",
                   help="an image no larger than this (px, longer side) in which no face is found is read whole "
                        f"as one face crop (status whole_image; default {WHOLE_IMAGE_MAX_SIDE}; 0: never)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)


def recognizer_kwargs(args: argparse.Namespace) -> dict:
    """The Recognizer's arguments from :func:`add_model_choice` and :func:`add_recognition_options`."""
    return dict(model=args.model, detector=args.detector, device=args.device, tta=args.tta,
                whole_image_max_side=args.whole_image_max_side)
