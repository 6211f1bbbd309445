"""Markdown table of recipe-search arms (numbers read from each run's files, never typed).

    python scripts/recipe_table.py runs/P0_adam runs/P1_sgd runs/P2_small ...

The first run is the control: each row names the config values that differ from it (``config.yaml``), then the
validation accuracy after every epoch, the best one and its mean class accuracy, and the training speed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat(v, key + "."))
        else:
            out[key] = v
    return out


def main(dirs: list[str]) -> None:
    ref = flat(yaml.safe_load((Path(dirs[0]) / "config.yaml").read_text()))
    epochs = 0
    rows = []
    for d in dirs:
        if not (Path(d) / "config.yaml").is_file():
            print(f"note: {d} has not started (no config.yaml); left out", file=sys.stderr)
            continue
        cfg = flat(yaml.safe_load((Path(d) / "config.yaml").read_text()))
        diff = {k: v for k, v in cfg.items() if (k not in ref or ref[k] != v) and k != "train.seed"}
        hist = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()] \
            if (Path(d) / "metrics.jsonl").is_file() else []
        epochs = max(epochs, len(hist))
        rows.append((Path(d).name, diff, hist, cfg.get("train.epochs")))
    print("| arm | differs from control | " + " | ".join(f"val e{i + 1}" for i in range(epochs))
          + " | best val acc | its mean-class | img/s (train) |")
    print("|---|---|" + "---|" * epochs + "---|---|---|")
    for name, diff, hist, planned in rows:
        change = ", ".join(f"`{k}={v}`" for k, v in sorted(diff.items())) or "(control)"
        vals = [f"{100 * h['val_accuracy']:.2f}" for h in hist] + ["–"] * (epochs - len(hist))
        best = max(hist, key=lambda h: h["val_accuracy"]) if hist else None
        done = "" if len(hist) == planned else f" ({len(hist)}/{planned} epochs)"
        speed = sorted(h["images_per_second"] for h in hist)[len(hist) // 2] if hist else None
        print(f"| {name}{done} | {change} | " + " | ".join(vals)
              + (f" | {100 * best['val_accuracy']:.2f} | {100 * best['val_mean_class_accuracy']:.2f} | {speed} |"
                 if best else " | – | – | – |"))


if __name__ == "__main__":
    main(sys.argv[1:])
