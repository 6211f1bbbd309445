"""Markdown rows from the summary.json files of FDRL/baseline pair runs (numbers are read, never typed).

    python scripts/results_table.py runs/fer2013_pair runs/ferplus_pair
    python scripts/results_table.py --seeds runs/fer2013_pair runs/fer2013_pair_seed1 runs/fer2013_pair_seed2

``--seeds``: the pair directories are repeats of one experiment with different ``train.seed``; prints one row per
seed with the paired FDRL - baseline difference, then the mean and sample standard deviation over seeds.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


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


def main(dirs: list[str]) -> None:
    print("| data set | model | epochs | selected | val acc | val mean-class | test acc | test mean-class "
          "| last-epoch test acc | train wall time | device |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in dirs:
        for variant in ("baseline", "fdrl"):
            f = Path(d) / variant / "summary.json"
            if not f.is_file():
                print(f"results_table: skipped {f.parent}: no summary.json (not finished, or no such run)",
                      file=sys.stderr)
                continue
            s = read_summary(f)
            sel = s[s["selected"]]
            test = s["config"]["data"]["test_split"]
            print(f"| {s['dataset']} ({test}) | {s['model_name']} | {s['epochs']} | {s['selected']} (epoch "
                  f"{sel['epoch']}) | {pct(sel['val_accuracy'])} | {pct(sel['val_mean_class_accuracy'])} | "
                  f"{pct(sel.get('test_accuracy'))} | {pct(sel.get('test_mean_class_accuracy'))} | "
                  f"{pct(s['last'].get('test_accuracy'))} | {s.get('train_seconds', 0) / 60:.0f} min | "
                  f"{s['device']} x{s['world_size']}, torch {s['versions']['torch']} |")


KEYS = (("test_accuracy", "test acc"), ("test_mean_class_accuracy", "test mean-class"), ("val_accuracy", "val acc"),
        ("val_mean_class_accuracy", "val mean-class"))


def seeds(dirs: list[str]) -> None:
    rows = []
    for d in dirs:
        pair = {v: read_summary(Path(d) / v / "summary.json") for v in ("baseline", "fdrl")}
        seed = {s["config"]["train"]["seed"] for s in pair.values()}
        if len(seed) != 1:
            raise SystemExit(f"{d}: the two runs of a pair have different seeds {seed}")
        rows.append((seed.pop(), {v: s[s["selected"]] for v, s in pair.items()}))
    # Runs without a test split (FERPlus on FER2013Valid; older FER2013 face-trunk runs that selected and reported
    # on PublicTest) get the val columns only.
    keys = [(k, name) for k, name in KEYS if all(r[1][v].get(k) is not None for r in rows for v in r[1])]
    head = " | ".join(f"{name} baseline | {name} FDRL | {name} diff" for _, name in keys)
    print(f"| seed | {head} |")
    print("|---" * (1 + 3 * len(keys)) + "|")
    for seed, sel in rows:
        cells = " | ".join(f"{pct(sel['baseline'][k])} | {pct(sel['fdrl'][k])} | "
                           f"{100 * (sel['fdrl'][k] - sel['baseline'][k]):+.2f}" for k, _ in keys)
        print(f"| {seed} | {cells} |")
    if len(rows) > 1:
        def ms(values: list[float], signed: bool = False) -> str:
            return f"{100 * statistics.mean(values):{'+' if signed else ''}.2f} ± {100 * statistics.stdev(values):.2f}"

        cells = " | ".join(
            f"{ms([r[1]['baseline'][k] for r in rows])} | {ms([r[1]['fdrl'][k] for r in rows])} | "
            f"{ms([r[1]['fdrl'][k] - r[1]['baseline'][k] for r in rows], signed=True)}" for k, _ in keys)
        print(f"| mean ± std ({len(rows)} seeds) | {cells} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seeds"]:
        seeds(sys.argv[2:])
    else:
        main(sys.argv[1:])
