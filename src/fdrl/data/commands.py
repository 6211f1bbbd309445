"""``fdrl data list`` and ``fdrl data check``."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from ..config import apply_overrides
from .base import ImageReadError
from .registry import create_dataset, dataset_info, list_datasets


def data_command(args: argparse.Namespace) -> int:
    if args.data_command == "list":
        for name in list_datasets():
            info = dataset_info(name)
            splits = "fold<k>/train|test" if info.kfold else ", ".join(info.splits)
            print(f"{name:11s} splits: {splits:45s} {info.description}")
        return 0
    return check(args)


def check(args: argparse.Namespace) -> int:
    """Per-split, per-class counts; every image is decoded so unreadable files are found and listed."""
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
