"""Markdown rows from the summary.json files of FDRL/baseline pair runs (numbers are read, never typed).

    python scripts/results_table.py runs/fer2013_pair runs/ferplus_pair
    python scripts/results_table.py --seeds runs/fer2013_pair runs/fer2013_pair_seed1 runs/fer2013_pair_seed2
    python scripts/results_table.py --seeds runs/pair_s0 runs/pair_s1 --json results/my_pair_seeds.json

``--seeds``: the pair directories are repeats of one experiment with different ``train.seed``; prints one row per
seed with the paired FDRL - baseline difference, then the mean and sample standard deviation over seeds.
``--json``: also write the table as a result file; put it in ``results/`` and a ``<!-- results:NAME -->`` block in a
page, and ``scripts/results_tables.py`` prints it there (the renderer is that script's, for both).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fdrl.tables import PAIR_COLUMNS, pair_row, render_table, seeds_table, write_result


def read_summary(path: Path) -> dict:
    """A run's summary.json; a one-line error naming the file where it is missing or unreadable (a run writes it
    only when it finishes, so a pair that is still training has none yet)."""
    if not path.is_file():
        raise SystemExit(f"results_table: {path} not found: the run has not finished (summary.json is written at "
                         f"its end), or {path.parent.parent} is not a pair folder (expected baseline/ and fdrl/ "
                         f"run folders in it)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"results_table: {path} is not a readable summary ({type(exc).__name__}: {exc})") from None


def runs_table(dirs: list[str]) -> dict:
    """One row per finished run of each pair folder; unfinished runs are named on stderr and left out."""
    rows = []
    for d in dirs:
        for variant in ("baseline", "fdrl"):
            f = Path(d) / variant / "summary.json"
            if not f.is_file():
                print(f"results_table: skipped {f.parent}: no summary.json (not finished, or no such run)",
                      file=sys.stderr)
                continue
            rows.append(pair_row(read_summary(f)))
    return {"kind": "table", "columns": PAIR_COLUMNS, "rows": rows}


def pairs_of_seeds(dirs: list[str]) -> dict:
    pairs = []
    for d in dirs:
        pair = {v: read_summary(Path(d) / v / "summary.json") for v in ("baseline", "fdrl")}
        seed = {s["config"]["train"]["seed"] for s in pair.values()}
        if len(seed) != 1:
            raise SystemExit(f"{d}: the two runs of a pair have different seeds {seed}")
        pairs.append((seed.pop(), {v: s[s["selected"]] for v, s in pair.items()}))
    return seeds_table(pairs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", action="store_true", help="the pair folders are seeds of one experiment")
    p.add_argument("--json", default=None, help="also write the table as a result file (for results/)")
    p.add_argument("dirs", nargs="+", help="pair folders, each with baseline/ and fdrl/ run folders")
    args = p.parse_args(argv)
    table = pairs_of_seeds(args.dirs) if args.seeds else runs_table(args.dirs)
    print(render_table([table], None))
    if args.json:
        write_result(args.json, table, ["scripts/results_table.py", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
