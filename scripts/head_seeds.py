"""FDRL vs its baseline, head only, on cached features of a frozen trunk: many seeds in minutes.

    python scripts/head_seeds.py --config fer2013_dlib --set data.root=../shared/data/fer2013 \
        --seeds 0..9 [--epochs 10] [--baseline-config my_baseline.yaml]
    python scripts/head_seeds.py ... --level last_stage_input      # last stage fine-tuned too, on cached maps
    python scripts/head_seeds.py ... --arm l1:model.alpha_reduce=l1 --arm lit:loss.balance_target=literal

``--config`` is a packaged recipe's name or a YAML file; the baseline is its ``--baseline`` twin unless
``--baseline-config`` names another. Both configs get ``trunk.freeze=all``; they must share data, preprocessing and
trunk (the features are shared,
which is what makes the per-seed difference a paired one). The trunk's pooled features of train and val (plain and
flipped) are extracted once and cached beside the image cache; each seed then trains the FDRL head and the
baseline's linear head from the same seed. Printed: extraction throughput and cache size, per-seed last-epoch
validation accuracy, mean ± std, and the paired FDRL − baseline difference. ``--level last_stage_input`` caches
the maps entering the trunk's last stage instead (fp16) and trains that stage with the head, from the trunk's
pretrained weights (the paper-like ``trunk.freeze=all_but_last`` fine-tune, many seeds without the full trunk).
``--arm NAME:KEY=VALUE`` (repeatable; repeats of one NAME merge) adds FDRL variants, e.g. the spec's ambiguity
switches: each trains from every seed on the same features and is compared, paired, with the same baseline and
with the config's FDRL.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from fdrl.config import load_config
from fdrl.data.loading import cache_dir, load_splits, train_split_name
from fdrl.engine.decomposition import EPOCH_FIGURES
from fdrl.errors import FdrlError
from fdrl.models import create_model
from fdrl.research.features import FEATURE_LEVELS, cached_features
from fdrl.research.heads import paired_summary, train_head
from fdrl.runtime import resolve_device


def parse_seeds(text: str) -> list[int]:
    """``0..9`` (inclusive) or ``0,3,7``."""
    if ".." in text:
        lo, hi = text.split("..")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def parse_arms(specs: list[str]) -> dict[str, list[str]]:
    """``["l1:model.alpha_reduce=l1", "l1:loss.lambda_balance=0.1"]`` -> ``{"l1": [both overrides]}``."""
    arms: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, override = spec.partition(":")
        if not sep or not name or "=" not in override or name in ("fdrl", "baseline"):
            raise ValueError(f"--arm {spec!r}: expected NAME:KEY=VALUE with a NAME other than fdrl/baseline")
        arms.setdefault(name, []).append(override)
    return arms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="the FDRL run config: a packaged recipe's name or a YAML file")
    ap.add_argument("--baseline-config", help="the baseline's config (default: the --config's baseline twin)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, applied to both")
    ap.add_argument("--seeds", default="0..9", help="0..9 or 0,1,2 (default 0..9)")
    ap.add_argument("--epochs", type=int, help="head epochs (default: train.epochs of the config)")
    ap.add_argument("--level", default="pooled", choices=FEATURE_LEVELS,
                    help="pooled: head only; last_stage_input: the last stage trains too")
    ap.add_argument("--arm", action="append", default=[], metavar="NAME:KEY=VALUE",
                    help="an FDRL variant (override applied to the FDRL config only); repeat a NAME to merge")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    overrides = [*args.set, "trunk.freeze=all", "data.test_split=null"]
    try:
        arms = parse_arms(args.arm)
        cfgs = {"fdrl": load_config(args.config, overrides),
                "baseline": load_config(args.baseline_config or args.config, overrides,
                                        baseline=args.baseline_config is None)}
        cfgs.update({name: load_config(args.config, [*overrides, *extra]) for name, extra in arms.items()})
    except (FdrlError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a = cfgs["fdrl"]
    for name, b in cfgs.items():
        if a.data != b.data or a.trunk != b.trunk:
            print(f"error: fdrl and {name} must share data, preprocessing and trunk (the trunk section)",
                  file=sys.stderr)
            return 2
    if a.train.num_threads:
        torch.set_num_threads(a.train.num_threads)
    device = resolve_device(a.train.device)
    splits = load_splits(a, print)
    trunk_model = create_model(a.model_name, num_classes=len(splits["train"].classes), **a.model_options()).to(device)
    trunk_name = trunk_model.config.trunk
    names = {"train": train_split_name(a.data), "val": a.data.val_split}
    feats = {role: cached_features(trunk_model.backbone, trunk_name, splits[role], a.data.dataset, split,
                                   a.data.preprocessing, device, cache_dir(a.data), a.train.eval_batch_size,
                                   level=args.level)
             for role, split in names.items()}
    trunk_state = trunk_model.backbone.state_dict() if args.level != "pooled" else None
    del trunk_model
    for role, f in feats.items():
        s = f.stats
        how = "read from cache" if s["cached"] else f"extracted in {s['seconds']} s ({s['images_per_second']} img/s)"
        size = f", {s['bytes'] / 2**20:.1f} MiB" if "bytes" in s else ""
        print(f"features {role}: {len(f)} images x 2 views x {tuple(f.plain.shape[1:])} ({f.plain.dtype}), "
              f"{how}{size}")
    rows = []
    fdrl_arms = [k for k in cfgs if k != "baseline"]
    print(f"{'seed':>4} " + " ".join(f"{k:>10}" for k in [*fdrl_arms, "baseline"]) + "  (last-epoch val acc, %; "
          "seconds per arm)")
    for seed in parse_seeds(args.seeds):
        r = {k: train_head(cfg, feats["train"], feats["val"], seed, args.epochs, trunk_state)
             for k, cfg in cfgs.items()}
        rows.append(r)
        print(f"{seed:>4} " + " ".join(f"{100 * r[k]['val_accuracy']:10.2f}" for k in [*fdrl_arms, "baseline"])
              + f"  ({', '.join(str(r[k]['seconds']) for k in r)})", flush=True)
    out: dict = {}
    for metric in ("val_accuracy", "val_mean_class_accuracy"):
        for arm in fdrl_arms:
            s = paired_summary([100 * r[arm][metric] for r in rows], [100 * r["baseline"][metric] for r in rows])
            if arm == "fdrl":
                out[metric] = s
            else:
                s["vs_fdrl"] = paired_summary([100 * r[arm][metric] for r in rows],
                                              [100 * r["fdrl"][metric] for r in rows])
                out.setdefault("arms", {}).setdefault(arm, {"overrides": arms[arm]})[metric] = s
            more = f"; vs fdrl {s['vs_fdrl']['mean_diff']:+.2f} ± {s['vs_fdrl']['std_diff']:.2f}" \
                if "vs_fdrl" in s else ""
            print(f"{metric} {arm}: {s['mean_a']:.2f} ± {s['std_a']:.2f}, baseline {s['mean_b']:.2f} ± "
                  f"{s['std_b']:.2f}, paired − baseline {s['mean_diff']:+.2f} ± {s['std_diff']:.2f} "
                  f"(ahead in {s['wins']}/{s['n']}){more}")
    for arm in fdrl_arms:
        print(f"decomposition {arm} (val, mean over seeds): " + ", ".join(
            f"{k} {np.mean([r[arm]['val_' + k] for r in rows]):.3f}" for k in EPOCH_FIGURES))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": out, "features": {
            k: f.stats for k, f in feats.items()}, "argv": sys.argv}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
