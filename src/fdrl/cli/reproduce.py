"""``fdrl reproduce``: a thin wrapper over :func:`fdrl.reproduce.reproduce` (argparse only at import time)."""

from __future__ import annotations

import argparse

from .options import add_overrides, positive_int, positive_number

DESCRIPTION = """Train a recipe's FDRL model and its baseline twin for each seed under the recipe's protocol
(train on its training part, select on the validation split, evaluate the selected checkpoint once on the test
split) and write OUT/results.md (the paired table), OUT/results.json (every run's summary) and OUT/runs/.
Works on a CUDA GPU (several runs side by side) and on the CPU; --resume continues an interrupted call."""


def add_parsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``reproduce`` to the ``fdrl`` command's subparsers; its handler is :func:`run`."""
    p = subparsers.add_parser("reproduce", help="FDRL vs its baseline over seeds, one command: a paired results table",
                              description=DESCRIPTION)
    p.add_argument("--recipe", required=True, metavar="NAME|FILE",
                   help="a packaged recipe (fdrl recipes lists them) or a YAML file of your own")
    p.add_argument("--data", required=True, metavar="ROOT",
                   help="the data set's root as its publisher lays it out (docs: Data sets), or an archive made by "
                        "scripts/transfer.py pack (.tar.gz, or its .json manifest when it was cut into parts)")
    p.add_argument("--out", required=True, metavar="DIR", help="results.md, results.json, reproduce.log, runs/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="one FDRL and one baseline run per seed (default: 0 1 2)")
    p.add_argument("--device", default="auto", help="auto (default: a GPU when there is one), cpu, cuda, cuda:N")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help="epochs per run (default: the recipe's); with --budget-s, the most that may be chosen")
    p.add_argument("--budget-s", type=positive_number, default=None, metavar="S",
                   help="seconds the whole call may take: a short probe picks the epoch count that fits before "
                        "training, and a guard stops runs that would still overrun (--resume continues them)")
    p.add_argument("--parallel", type=positive_int, default=None, metavar="K",
                   help="runs side by side on the device (default: 1 on a CPU; on a GPU one per 8 GiB of its "
                        "memory, at most 6)")
    add_overrides(p, help="recipe override for every run, e.g. --set train.amp=bf16 (not data.root, train.seed, "
                          "train.epochs, train.device: the options above set them)")
    p.add_argument("--resume", action="store_true",
                   help="continue the reproduction in --out: skip finished runs, continue unfinished ones")
    p.add_argument("--work", default=None, metavar="DIR",
                   help="scratch folder for an unpacked --data archive and the budget's probe runs, kept "
                        "(default: a temporary folder, removed at the end)")
    p.add_argument("--runs-dir", default=None, metavar="DIR",
                   help="where the run folders (checkpoints, logs) go (default: OUT/runs); elsewhere when only a "
                        "small OUT can be copied back")
    p.add_argument("--export-best", action="store_true",
                   help="also write OUT/fdrl_best.pt: the selected checkpoint of the FDRL run best on the "
                        "validation split, fp16 without optimiser state, with a sha256 manifest")
    p.add_argument("--part-mib", type=positive_number, default=None, metavar="N",
                   help="with --export-best, cut that file into parts of at most N MiB "
                        "(scripts/transfer.py join puts them back together)")
    p.add_argument("--probe-steps", type=positive_int, default=20, metavar="N",
                   help="training steps per probe epoch with --budget-s (default: 20)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``fdrl reproduce``; 0 when every run finished, 3 when some did not (the table says which)."""
    from ..reproduce.suite import reproduce

    res = reproduce(args.recipe, args.data, args.out, args.seeds, device=args.device, epochs=args.epochs,
                    budget_s=args.budget_s, parallel=args.parallel, overrides=args.overrides, resume=args.resume,
                    work=args.work, runs_dir=args.runs_dir, export_best=args.export_best, part_mib=args.part_mib,
                    probe_steps=args.probe_steps)
    print(f"results: {args.out}/results.md, {args.out}/results.json")
    return 0 if all(r["status"] == "done" for r in res["runs"].values()) else 3
