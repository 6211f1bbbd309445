#!/usr/bin/env python3
"""Files for a GPU machine reached through size-limited transfers, for ``fdrl reproduce``.

    python scripts/transfer.py pack /data/fer2013 fer2013.tar.gz --exclude 'test/*/PrivateTest_*' --part-mib 15
    python scripts/transfer.py trunk fer2013_dlib_long dlib_trunk.pt      # a recipe's pretrained trunk as a file
    python scripts/transfer.py join OUT/fdrl_best.pt.json fdrl_best.pt    # any parts, sha256 checked

``pack`` writes one reproducible archive of a data root (and, with ``--part-mib``, parts of it) with a manifest;
``fdrl reproduce --data fer2013.tar.gz`` (or ``--data fer2013.tar.gz.json`` for parts) reads it directly. ``trunk``
saves the pretrained trunk weights a recipe names, for a machine without the package they come from
(``--set trunk.pretrained_path=dlib_trunk.pt``). ``join`` rebuilds a file from its parts, e.g. the checkpoint
``fdrl reproduce --export-best --part-mib N`` wrote.
"""

from __future__ import annotations

import argparse
import sys

from fdrl.errors import FdrlError
from fdrl.reproduce.transfer import export_trunk, join_parts, pack_folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="a data root into one .tar.gz (original bytes) + manifest, in parts if asked")
    p.add_argument("root")
    p.add_argument("archive", help="the .tar.gz to write")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out files whose path under the root matches, e.g. 'test/*/PrivateTest_*'")
    p.add_argument("--part-mib", type=float, default=None, metavar="N", help="cut it into parts of at most N MiB")
    t = sub.add_parser("trunk", help="the pretrained trunk weights a recipe starts from, as a torch file")
    t.add_argument("recipe", help="a packaged recipe or a YAML file")
    t.add_argument("out")
    t.add_argument("--float32", action="store_true", help="keep float32 (default: fp16, half the size)")
    j = sub.add_parser("join", help="rebuild a file from the parts its manifest lists, size and sha256 checked")
    j.add_argument("manifest", help="<file>.json")
    j.add_argument("out")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "pack":
            part_bytes = None if args.part_mib is None else int(args.part_mib * 2**20)
            pack_folder(args.root, args.archive, args.exclude, part_bytes, log=print)
        elif args.cmd == "trunk":
            info = export_trunk(args.recipe, args.out, half=not args.float32)
            print(f"{args.out}: the {info['trunk']} trunk's weights from {info['source']} ({info['dtype']}, "
                  f"{info['bytes'] / 1e6:.1f} MB); use them with --set trunk.pretrained_path={args.out}")
        else:
            info = join_parts(args.manifest, args.out)
            print(f"{args.out}: {info['bytes']} bytes, sha256 {info['sha256']} verified")
    except FdrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
