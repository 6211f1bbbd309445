"""``fdrl`` command line: a thin layer over the library API, one module per group of commands.

Only argparse and torch-free tables are imported at start-up, so ``fdrl --help`` answers in a fraction of a
second; each command imports torch and friends when it runs. Argument groups that several commands share live in
:mod:`.options`.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import FdrlError
from . import catalog, data, inference, reproduce, training


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fdrl", description="Facial expression recognition with FDRL (CVPR 2021).")
    p.add_argument("--version", action="version", version=f"fdrl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    catalog.add_parsers(sub)  # models, recipes
    training.add_parsers(sub)  # demo, train, teach, eval, explain
    data.add_parsers(sub)  # data, prepare
    inference.add_parsers(sub)  # predict, export, serve
    reproduce.add_parsers(sub)  # reproduce
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

