"""One run of ``fdrl reproduce`` in its own process: the arguments of ``fdrl train``, and what it runs.

``python -m fdrl.reproduce.worker --recipe NAME [--baseline] --set KEY=VALUE ... --out RUN [--resume]`` trains
exactly as ``fdrl train`` with the same arguments does (the same handler), so every run of a reproduction can be
repeated alone with the command its results record.
"""

from __future__ import annotations

import argparse
import sys

from ..engine.runner import train_command
from ..errors import FdrlError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fdrl.reproduce.worker", description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--recipe", metavar="NAME")
    source.add_argument("--config", metavar="FILE")
    p.add_argument("--baseline", action="store_true")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    args.folds = None
    try:
        return train_command(args)
    except FdrlError as exc:  # as `fdrl train` reports it: one line
        print(f"fdrl train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
