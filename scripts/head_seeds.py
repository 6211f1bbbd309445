"""FDRL vs its baseline, head only, on cached features of a frozen trunk: many seeds in minutes.

    python scripts/head_seeds.py --config configs/fer2013_dlib.yaml --set data.root=../shared/data/fer2013 \
        --seeds 0..9 [--epochs 10] [--baseline-config configs/fer2013_dlib_baseline.yaml]
    python scripts/head_seeds.py ... --level last_stage_input      # last stage fine-tuned too, on cached maps

Both configs get ``model.freeze=all``; they must share data, preprocessing and trunk (the features are shared,
which is what makes the per-seed difference a paired one). The trunk's pooled features of train and val (plain and
flipped) are extracted once and cached beside the image cache; each seed then trains the FDRL head and the
baseline's linear head from the same seed. Printed: extraction throughput and cache size, per-seed last-epoch
validation accuracy, mean ± std, and the paired FDRL − baseline difference. ``--level last_stage_input`` caches
the maps entering the trunk's last stage instead (fp16) and trains that stage with the head, from the trunk's
pretrained weights (the paper-like ``model.freeze=all_but_last`` fine-tune, many seeds without the full trunk).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fdrl.config import load_config
from fdrl.data.loading import cache_dir, load_splits, train_split_name
from fdrl.engine.features import FEATURE_LEVELS, cached_features
from fdrl.engine.heads import paired_summary, train_head
from fdrl.engine.runtime import resolve_device
from fdrl.errors import FdrlError
from fdrl.models import create_model

TRUNK_FIELDS = ("trunk", "pretrained_path", "stem")


def parse_seeds(text: str) -> list[int]:
    """``0..9`` (inclusive) or ``0,3,7``."""
    if ".." in text:
        lo, hi = text.split("..")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def baseline_path(config: str) -> str:
    p = Path(config)
    return str(p.with_name(p.stem + "_baseline" + p.suffix))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="the FDRL run config")
    ap.add_argument("--baseline-config", help="its baseline twin (default: <config>_baseline.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, applied to both")
    ap.add_argument("--seeds", default="0..9", help="0..9 or 0,1,2 (default 0..9)")
    ap.add_argument("--epochs", type=int, help="head epochs (default: train.epochs of the config)")
    ap.add_argument("--level", default="pooled", choices=FEATURE_LEVELS,
                    help="pooled: head only; last_stage_input: the last stage trains too")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    overrides = [*args.set, "model.freeze=all", "data.test_split=null"]
    try:
        cfgs = {"fdrl": load_config(args.config, overrides),
                "baseline": load_config(args.baseline_config or baseline_path(args.config), overrides)}
    except FdrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a, b = cfgs["fdrl"], cfgs["baseline"]
    if a.data != b.data or any(a.model.get(k) != b.model.get(k) for k in TRUNK_FIELDS):
        print("error: the two configs must share data, preprocessing and trunk (trunk, pretrained_path, stem)",
              file=sys.stderr)
        return 2
    if a.train.num_threads:
        torch.set_num_threads(a.train.num_threads)
    device = resolve_device(a.train.device)
    splits = load_splits(a, print)
    trunk_model = create_model(a.model_name, num_classes=len(splits["train"].classes), **a.model).to(device)
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
    print(f"{'seed':>4} {'fdrl val acc':>12} {'baseline val acc':>16} {'diff':>7}  (last epoch, head only)")
    for seed in parse_seeds(args.seeds):
        r = {k: train_head(cfg, feats["train"], feats["val"], seed, args.epochs, trunk_state)
             for k, cfg in cfgs.items()}
        rows.append(r)
        fa, ba = 100 * r["fdrl"]["val_accuracy"], 100 * r["baseline"]["val_accuracy"]
        print(f"{seed:>4} {fa:12.2f} {ba:16.2f} {fa - ba:+7.2f}  ({r['fdrl']['seconds']} s + "
              f"{r['baseline']['seconds']} s)", flush=True)
    out = {}
    for metric in ("val_accuracy", "val_mean_class_accuracy"):
        s = paired_summary([100 * r["fdrl"][metric] for r in rows], [100 * r["baseline"][metric] for r in rows])
        out[metric] = s
        print(f"{metric}: fdrl {s['mean_a']:.2f} ± {s['std_a']:.2f}, baseline {s['mean_b']:.2f} ± {s['std_b']:.2f}, "
              f"paired fdrl − baseline {s['mean_diff']:+.2f} ± {s['std_diff']:.2f} "
              f"(fdrl ahead in {s['wins']}/{s['n']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": out, "features": {
            k: f.stats for k, f in feats.items()}, "argv": sys.argv}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
