"""Markdown table of recipe-search arms (numbers read from each run's files, never typed).

    python scripts/recipe_table.py runs/P0_adam runs/P1_sgd runs/P2_small ...
    python scripts/recipe_table.py runs/P0_adam runs/P1_sgd --json results/my_recipe_arms.json

The first run is the control: each row names the config values that differ from it (``config.yaml``), then the
validation accuracy after every epoch, the best one and its mean class accuracy, and the training speed.
``--json``: also write the table as a result file for ``results/`` (printed in the docs by
``scripts/results_tables.py``, whose renderer this script uses).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from fdrl.tables import recipe_table, render_table, write_result


def flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat(v, key + "."))
        else:
            out[key] = v
    return out


def read_arms(dirs: list[str]) -> list[dict]:
    ref = flat(yaml.safe_load((Path(dirs[0]) / "config.yaml").read_text()))
    arms = []
    for d in dirs:
        if not (Path(d) / "config.yaml").is_file():
            print(f"note: {d} has not started (no config.yaml); left out", file=sys.stderr)
            continue
        cfg = flat(yaml.safe_load((Path(d) / "config.yaml").read_text()))
        change = {k: v for k, v in cfg.items() if (k not in ref or ref[k] != v) and k != "train.seed"}
        hist = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()] \
            if (Path(d) / "metrics.jsonl").is_file() else []
        arms.append({"arm": Path(d).name, "change": change, "history": hist, "planned": cfg.get("train.epochs")})
    return arms


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None, help="also write the table as a result file (for results/)")
    p.add_argument("dirs", nargs="+", help="run folders; the first is the control")
    args = p.parse_args(argv)
    table = recipe_table(read_arms(args.dirs))
    print(render_table([table], None))
    if args.json:
        write_result(args.json, table, ["scripts/recipe_table.py", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
