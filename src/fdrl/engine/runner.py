"""CLI handlers for ``fdrl train``, ``eval``, ``explain`` and ``demo`` (thin wrappers over the engine)."""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path
from typing import Any

from ..config import TrainConfig, load_config
from ..errors import ConfigError
from ..recipes import names_a_file

DEMO_OVERRIDES = [
    "model_name=fdrl_resnet18",
    "model.alpha_reduce=mean",  # see docs/results.md: the L1-sum alpha explodes when training from scratch
    "data.dataset=synthetic",
    "data.preprocessing.input_size=48",
    "data.augment=basic",
    "data.options={train_size: 2100, eval_size: 700, image_size: 48}",
    "optim.lr=0.001",
    "sched.name=cosine",
    "train.epochs=14",
    "train.batch_size=64",
    "train.select=val",
    "report.tsne_max_samples=700",
]


def train_command(args: argparse.Namespace) -> int:
    if args.recipe is not None and names_a_file(args.recipe):
        raise ConfigError(f"--recipe {args.recipe}: expected the name of a packaged recipe (fdrl recipes lists "
                          "them); a YAML file goes to --config")
    source = args.recipe if args.recipe is not None else None if args.config is None else Path(args.config)
    cfg = load_config(source, args.overrides, baseline=args.baseline)
    if args.folds:
        return run_folds(cfg, Path(args.out), args.folds, args.resume)
    from .trainer import train

    train(cfg, args.out, resume=args.resume)
    return 0


def run_folds(cfg: TrainConfig, out: Path, k: int, resume: bool) -> int:
    """Subject-independent k-fold: train each fold, report mean +- std of test accuracy."""
    from .trainer import train

    accs, maccs = [], []
    for fold in range(k):
        c = copy.deepcopy(cfg)
        c.data.options = {**c.data.options, "num_folds": k}
        c.data.train_split, c.data.val_split, c.data.test_split = (
            f"fold{fold}/train/fit", f"fold{fold}/train/holdout", f"fold{fold}/test")
        fold_dir = out / f"fold{fold}"
        s = train(c, fold_dir, resume=resume and (fold_dir / "last.pt").is_file())
        accs.append(s["test_accuracy"])
        maccs.append(s["test_mean_class_accuracy"])
    summary: dict[str, Any] = {
        "folds": k, "test_accuracy": accs, "mean": statistics.mean(accs),
        "std": statistics.stdev(accs) if k > 1 else 0.0, "mean_class_accuracy_mean": statistics.mean(maccs),
    }
    (out / "folds_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{k}-fold test accuracy: {summary['mean'] * 100:.2f} +- {summary['std'] * 100:.2f} %")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from ..config import apply_overrides
    from .evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(args.checkpoint, args.dataset, args.root, args.split,
                            options=apply_overrides({}, args.options), face_detector=args.face_detector,
                            tta=args.tta, device=args.device, batch_size=args.batch_size, out=args.out)
    print(f"{args.dataset}/{args.split}: accuracy {m['accuracy']:.4f}, mean class accuracy "
          f"{m['mean_class_accuracy']:.4f} on {m['num_samples']} images"
          + (f" (skipped {m['skipped']})" if m["skipped"] else "") + f"; report in {args.out}")
    if "decomposition" in m:
        from .decomposition import summary_line

        print(summary_line(m["decomposition"]))
    return 0


def explain_command(args: argparse.Namespace) -> int:
    from ..config import apply_overrides
    from .explain import explain_checkpoint, map_similarity

    maps = explain_checkpoint(args.checkpoint, args.dataset, args.root, args.split, out=args.out,
                              max_per_class=args.per_class, target=args.target, method=args.method,
                              options=apply_overrides({}, args.options), face_detector=args.face_detector,
                              device=args.device, batch_size=args.batch_size)
    sim = map_similarity(maps)
    print(f"{args.dataset}/{args.split}: saliency of {args.target} ({args.method}) for {maps.saliency.shape[0]} "
          f"latent features over {int(maps.counts.sum())} faces ({', '.join(map(str, maps.counts))} per class); "
          f"maps correlate r={sim['between_latent_features']:.2f} between latent features within a class, "
          f"r={sim['between_classes']:.2f} between classes for one latent feature; "
          f"{args.out}/latent_maps.png and latent_maps.npz")
    return 0


def demo_command(args: argparse.Namespace) -> int:
    from .trainer import train

    cfg = load_config(None, DEMO_OVERRIDES + list(args.overrides))
    out = Path(args.out)
    if out.exists() and (out / "last.pt").exists():
        print(f"note: {out} already holds a run; starting over")
        for f in ("metrics.jsonl", "last.pt", "best.pt"):
            (out / f).unlink(missing_ok=True)
    s = train(cfg, out)
    sel = s["selected"]
    print()
    print(f"FDRL on the synthetic set: test accuracy {s['test_accuracy'] * 100:.2f} % "
          f"(mean class {s['test_mean_class_accuracy'] * 100:.2f} %), {sel}.pt chosen on validation.")
    print(f"Report: {out / ('report_' + sel)}/ (metrics.json, confusion_matrix.png, alpha_by_class.png, tsne.png)"
          f" and {out / 'curves.png'}")
    print("Train on a real data set, e.g. FER2013 in its image-folder release:")
    print("  fdrl train --recipe fer2013 --set data.root=/path/to/fer2013 --out runs/fer2013   # fdrl recipes: all")
    return 0
