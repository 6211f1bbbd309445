"""``fdrl data list``, ``fdrl data check`` and ``fdrl prepare``: the data sets on disk."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from ..errors import ImageReadError
from ..faces import DEFAULT_MARGIN, DETECTORS
from .options import add_dataset_options


def add_parsers(sub: argparse._SubParsersAction) -> None:
    da = sub.add_parser("data", help="list data sets or check one on disk")
    dsub = da.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.add_parser("list", help="every registered data set")
    ck = dsub.add_parser("check", help="per-split, per-class counts and skipped files")
    ck.add_argument("--dataset", required=True)
    ck.add_argument("--root", default=None)
    ck.add_argument("--splits", default=None, help="comma-separated splits (default: the data set's own)")
    add_dataset_options(ck)
    ck.add_argument("--face-detector", default="none", choices=DETECTORS,
                    help="also detect a face in every image and count those without one")
    ck.add_argument("--face-margin", type=float, default=DEFAULT_MARGIN)
    da.set_defaults(func=data_command)

    pr = sub.add_parser("prepare", help="detect, align and crop faces of a raw image folder")
    pr.add_argument("src")
    pr.add_argument("dst")
    pr.add_argument("--size", type=int, default=224)
    pr.add_argument("--detector", default="opencv", choices=DETECTORS)
    pr.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    pr.set_defaults(func=prepare_command)


def prepare_command(args: argparse.Namespace) -> int:
    from ..data.prepare import prepare_folder

    counts = prepare_folder(args.src, args.dst, args.size, args.detector, args.margin)
    total = counts["ok"] + counts["no_face"] + counts["unreadable"]
    print(f"prepared {counts['ok']}/{total} images into {args.dst} ({counts['aligned']} eye-aligned); "
          f"no face: {counts['no_face']}, unreadable: {counts['unreadable']} (see {args.dst}/prepare_report.csv)")
    return 0 if counts["ok"] else 1


def data_command(args: argparse.Namespace) -> int:
    from ..data.registry import dataset_info, list_datasets

    if args.data_command == "list":
        for name in list_datasets():
            info = dataset_info(name)
            splits = "fold<k>/train|test" if info.kfold else ", ".join(info.splits)
            print(f"{name:11s} splits: {splits:45s} {info.description}")
        return 0
    return check(args)


def check(args: argparse.Namespace) -> int:
    """Per-split, per-class counts; every image is decoded so unreadable files are found and listed."""
    from ..config import apply_overrides
    from ..data.registry import create_dataset, dataset_info

    info = dataset_info(args.dataset)
    options = apply_overrides({}, args.options)
    splits = args.splits.split(",") if args.splits else (["all"] if info.kfold else list(info.splits[:3]))
    bad_total, unavailable = 0, []
    for split in splits:
        try:
            ds = create_dataset(args.dataset, args.root, split, **options)
            ds.set_face_crop(args.face_detector, args.face_margin)
        except Exception as exc:  # noqa: BLE001 - report each split independently
            print(f"{args.dataset}/{split}: unavailable: {exc}", file=sys.stderr)
            unavailable.append(split)
            continue
        unreadable = []
        for i in range(len(ds)):
            try:
                ds.load(i)
            except ImageReadError as exc:
                unreadable.append((ds.samples[i].path or ds.samples[i].id, str(exc)))
        counts = ds.class_counts()
        print(f"{args.dataset}/{split}: {len(ds) - len(unreadable)} usable images")
        for name, n in counts.items():
            print(f"  {name:12s} {n:7d}")
        excluded = ds.excluded
        if excluded:
            print(f"  excluded by the label protocol: {dict(excluded)}")
        problems = ds.skipped + unreadable
        if problems:
            reasons = Counter(r for _, r in problems)
            print(f"  skipped {len(problems)}: {dict(reasons)}")
            for where, reason in problems[:20]:
                print(f"    {where}: {reason}")
        bad_total += len(problems)
    if unavailable:  # a check that could not look at a split has not passed: a script must see it fail
        print(f"fdrl data check: error: {len(unavailable)} of {len(splits)} split(s) of {args.dataset} could not "
              f"be read ({', '.join(unavailable)}); check --root", file=sys.stderr)
        return 2
    return 1 if bad_total else 0
