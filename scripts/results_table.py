"""Markdown rows from the summary.json files of FDRL/baseline pair runs (numbers are read, never typed).

    python scripts/results_table.py runs/fer2013_pair runs/ferplus_pair
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def main(dirs: list[str]) -> None:
    print("| data set | model | epochs | selected | val acc | val mean-class | test acc | test mean-class "
          "| last-epoch test acc | train wall time | device |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in dirs:
        for variant in ("baseline", "fdrl"):
            f = Path(d) / variant / "summary.json"
            if not f.is_file():
                continue
            s = json.loads(f.read_text())
            sel = s[s["selected"]]
            test = s["config"]["data"]["test_split"]
            print(f"| {s['dataset']} ({test}) | {s['model_name']} | {s['epochs']} | {s['selected']} (epoch "
                  f"{sel['epoch']}) | {pct(sel['val_accuracy'])} | {pct(sel['val_mean_class_accuracy'])} | "
                  f"{pct(sel.get('test_accuracy'))} | {pct(sel.get('test_mean_class_accuracy'))} | "
                  f"{pct(s['last'].get('test_accuracy'))} | {s.get('train_seconds', 0) / 60:.0f} min | "
                  f"{s['device']} x{s['world_size']}, torch {s['versions']['torch']} |")


if __name__ == "__main__":
    main(sys.argv[1:])
