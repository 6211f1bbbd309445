"""Seeded, stratified k-fold cross-validation of full training runs, FDRL arms paired with their baseline.

    python scripts/cross_validate.py --root ../shared/data/sfew --out runs/cv_sfew --folds 5 --seeds 0,1 \
        --arm baseline=sfew:model_name=baseline_resnet18 --arm fdrl=sfew \
        --arm sharp=sfew:loss.lambda_sharpness=0.5 [--jobs 2] [--set train.epochs=10]

An arm's config is a packaged recipe's name or a YAML file; ``model_name=baseline_resnet18`` makes it the recipe's
baseline twin (the same trunk and recipe, one linear layer as the head; head options set before it are dropped).

For benchmarks whose test labels are withheld (SFEW 2.0's Val), arms are compared on the training split alone:
each seed cuts ``train`` into ``--folds`` stratified folds (``train/fold<k>/train|test``, whole movies or subjects
per fold where samples carry one; the seed picks the cut), every arm trains on the other folds with that seed and
is evaluated on fold k at its last epoch (nothing is selected on the fold, so its figure is not optimistic).
The first arm is the reference: every other arm is reported as its paired difference from it, over the
(seed, fold) cells. Each run is an ordinary ``fdrl train`` into ``OUT/<arm>/s<seed>_f<k>``: a finished run is
read back, an interrupted one continues with ``--resume``, so the command can be re-run after a stop. Printed and
written to ``OUT/summary.json``: accuracy and mean class accuracy (mean ± std over cells), the paired differences,
and the decomposition figures of FDRL arms (fdrl.engine.decomposition) on the held-out folds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fdrl.data.registry import fold_splits
from fdrl.engine.decomposition import EPOCH_FIGURES as DECOMPOSITION
from fdrl.recipes import names_a_file


def parse_arm(spec: str) -> tuple[str, str, list[str]]:
    """``name=recipe_or_file[:key=value,key=value]`` -> (name, config, overrides)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--arm {spec!r}: expected NAME=CONFIG[:KEY=VALUE,...]")
    config, _, extra = rest.partition(":")
    return name, config, [o for o in extra.split(",") if o]


def run_dir(out: Path, arm: str, seed: int, fold: int) -> Path:
    return out / arm / f"s{seed}_f{fold}"


def train_cell(arm: tuple[str, str, list[str]], seed: int, fold: int, args: argparse.Namespace) -> Path:
    """One ``fdrl train`` of ``arm`` on every fold but ``fold`` of seed ``seed``'s cut (skipped when done)."""
    name, config, extra = arm
    d = run_dir(Path(args.out), name, seed, fold)
    if (d / "summary.json").is_file():
        return d
    source = ["--config", config] if names_a_file(config) else ["--recipe", config]
    train, _, test = fold_splits(fold, base=args.split)
    cmd = [sys.executable, "-m", "fdrl.cli", "train", *source, "--out", str(d),
           "--set", f"data.root={args.root}", "--set", f"data.train_split={train}",
           "--set", "data.val_split=null", "--set", f"data.test_split={test}",
           "--set", f"data.options.num_folds={args.folds}", "--set", f"train.seed={seed}",
           "--set", f"train.num_threads={args.threads}", "--set", "train.select=last",
           "--set", "report.plots=false", "--set", "report.tsne=false"]
    for o in [*args.set, *extra]:
        cmd += ["--set", o]
    if (d / "last.pt").is_file():
        cmd.append("--resume")
    d.mkdir(parents=True, exist_ok=True)
    with (d / "train.log").open("a") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        raise RuntimeError(f"{name} seed {seed} fold {fold} failed (exit {rc}); see {d / 'train.log'}")
    print(f"done {name} s{seed} f{fold}", flush=True)
    return d


def read_cell(d: Path) -> dict[str, float]:
    """The held-out fold's figures of a finished run (its last epoch)."""
    s = json.loads((d / "summary.json").read_text())
    m = json.loads((d / "report_last" / "metrics.json").read_text())
    row = {"accuracy": 100 * s["test_accuracy"], "mean_class_accuracy": 100 * s["test_mean_class_accuracy"],
           "train_seconds": s.get("train_seconds", 0.0)}
    row.update({k: m["decomposition"][k] for k in DECOMPOSITION if k in m.get("decomposition", {})})
    return row


def ms(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise(cells: dict[str, dict[tuple[int, int], dict[str, float]]], ref: str) -> dict:
    keys = sorted(cells[ref])
    out: dict = {"reference": ref, "cells": len(keys), "arms": {}}
    for arm, rows in cells.items():
        a: dict = {}
        for metric in ("accuracy", "mean_class_accuracy", *DECOMPOSITION, "train_seconds"):
            if all(metric in rows[k] for k in keys):
                a[metric] = ms([rows[k][metric] for k in keys])
        if arm != ref:
            for metric in ("accuracy", "mean_class_accuracy"):
                d = [rows[k][metric] - cells[ref][k][metric] for k in keys]
                a[f"{metric}_minus_{ref}"] = ms(d)
                a[f"{metric}_wins"] = int(sum(x > 0 for x in d))
        out["arms"][arm] = a
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="the data set's root (data.root)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--arm", action="append", required=True, metavar="NAME=CONFIG[:KEY=VALUE,...]",
                    help="an arm; the first is the reference the others are paired with")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", default="0,1", help="comma-separated; each seed is its own cut into folds")
    ap.add_argument("--split", default="train", help="the split that is cut into folds")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every arm")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    args = ap.parse_args(argv)
    arms = [parse_arm(s) for s in args.arm]
    seeds = [int(s) for s in args.seeds.split(",")]
    cells_todo = [(arm, s, k) for s in seeds for k in range(args.folds) for arm in arms]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        dirs = list(pool.map(lambda c: train_cell(c[0], c[1], c[2], args), cells_todo))
    cells: dict[str, dict[tuple[int, int], dict[str, float]]] = {}
    for (arm, s, k), d in zip(cells_todo, dirs, strict=True):
        cells.setdefault(arm[0], {})[(s, k)] = read_cell(d)
    summary = summarise(cells, arms[0][0])
    summary["argv"] = sys.argv
    summary["arms_spec"] = {name: {"config": c, "overrides": [*args.set, *o]} for name, c, o in arms}
    Path(args.out, "summary.json").write_text(json.dumps(summary, indent=2))
    ref = arms[0][0]
    print(f"{args.folds}-fold x {len(seeds)} seeds ({summary['cells']} cells), last epoch on the held-out fold:")
    for arm, a in summary["arms"].items():
        acc, mca = a["accuracy"], a["mean_class_accuracy"]
        line = f"{arm:>14}: acc {acc[0]:.2f} ± {acc[1]:.2f}, mean class {mca[0]:.2f} ± {mca[1]:.2f}"
        if arm != ref:
            d = a[f"accuracy_minus_{ref}"]
            line += f"; − {ref} {d[0]:+.2f} ± {d[1]:.2f} (ahead in {a['accuracy_wins']}/{summary['cells']})"
        if "alpha_cv" in a:
            line += (f"; alpha CV {a['alpha_cv'][0]:.3f}, class spread {a['alpha_class_spread'][0]:.3f}, "
                     f"latent cosine {a.get('latent_cosine', (float('nan'),))[0]:.3f}, eff. rank "
                     f"{a.get('latent_effective_rank', (float('nan'),))[0]:.2f}")
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
