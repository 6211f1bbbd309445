"""``fdrl train``, ``teach``, ``eval``, ``explain`` and ``demo``: thin wrappers over :mod:`fdrl.engine`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..literals import TTA_MODES
from ..recipes import names_a_file
from .options import PACKAGED_MODELS, add_overrides, add_split_source, positive_int, positive_number


def add_parsers(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="generate the synthetic set, train FDRL on it, evaluate and write a report")
    d.add_argument("--out", default="runs/demo")
    add_overrides(d)
    d.set_defaults(func=demo_command)

    t = sub.add_parser("train", help="train a model from a packaged recipe or a YAML config")
    add_run_source(t)
    t.add_argument("--baseline", action="store_true",
                   help="train the baseline twin: the same recipe, trunk and data, one linear layer as the head")
    add_overrides(t, help="override a config key, e.g. --set train.epochs=5 --set model.delta=0.3")
    t.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, report)")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt exactly")
    t.add_argument("--folds", type=int, default=None, help="k-fold protocol (ckplus, mmi, oulu_casia)")
    t.set_defaults(func=train_command)

    te = sub.add_parser("teach", help="the mean class probabilities of trained models (teachers) on a run's "
                                      "training split, for distilling them into one model (data.teacher_targets)")
    te.add_argument("--checkpoint", dest="teachers", action="append", required=True, metavar="FILE|NAME",
                    help=f"a teacher: an fdrl checkpoint or a shipped model ({', '.join(PACKAGED_MODELS)}); "
                         "repeat for each")
    add_run_source(te)
    add_overrides(te, help="override a config key of the student's run, as for fdrl train")
    te.add_argument("--tta", choices=TTA_MODES, default=None, help="test-time views per teacher (default: none)")
    te.add_argument("--temperature", type=positive_number, default=None, metavar="T",
                    help="softmax(logits / T) per teacher (default: 1)")
    te.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    te.add_argument("--batch-size", type=positive_int, default=None)
    te.add_argument("--out", required=True, metavar="FILE", help="the targets file (.pt) to write")
    te.set_defaults(func=teach_command)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a data set split and write a report")
    e.add_argument("--checkpoint", required=True)
    add_split_source(e, split="test")
    e.add_argument("--out", required=True)
    e.add_argument("--tta", choices=TTA_MODES, default="none")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=256)
    e.set_defaults(func=eval_command)

    xp = sub.add_parser("explain", help="what each latent feature looks at: per-class saliency maps of an FDRL "
                                        "checkpoint (PNG grid and .npz)")
    xp.add_argument("--checkpoint", required=True, help="an FDRL checkpoint (a baseline has no latent features)")
    add_split_source(xp, split="val", split_help="a validation split (default: val)")
    xp.add_argument("--out", required=True, help="folder for latent_maps.png and latent_maps.npz")
    xp.add_argument("--per-class", type=positive_int, default=100, metavar="N",
                    help="faces averaged per class, a seeded random choice (default: 100)")
    xp.add_argument("--target", choices=["alpha", "latent_norm"], default="alpha",
                    help="alpha: the importance weight alpha_j; latent_norm: ||l_j|| (default: alpha)")
    xp.add_argument("--method", choices=["grad", "grad_x_input", "smoothgrad"], default="grad",
                    help="saliency: |gradient|, |gradient x input| or SmoothGrad (default: grad)")
    xp.add_argument("--device", default="auto")
    xp.add_argument("--batch-size", type=positive_int, default=64)
    xp.set_defaults(func=explain_command)


def add_run_source(p: argparse.ArgumentParser) -> None:
    """``--recipe NAME`` or ``--config FILE``: the run's config, before ``--set`` overrides."""
    source = p.add_mutually_exclusive_group()
    source.add_argument("--recipe", metavar="NAME", help="a recipe shipped in the package (fdrl recipes lists them)")
    source.add_argument("--config", metavar="FILE", help="your own YAML file (it may `inherit:` a recipe by name)")


def run_config(args: argparse.Namespace):
    """The config ``--recipe``/``--config``, ``--set`` (and ``--baseline`` where the command has it) resolve to."""
    from ..config import load_config

    if args.recipe is not None and names_a_file(args.recipe):
        raise ConfigError(f"--recipe {args.recipe}: expected the name of a packaged recipe (fdrl recipes lists "
                          "them); a YAML file goes to --config")
    source = args.recipe if args.recipe is not None else None if args.config is None else Path(args.config)
    return load_config(source, args.overrides, baseline=getattr(args, "baseline", False))


def train_command(args: argparse.Namespace) -> int:
    cfg = run_config(args)
    if args.folds:
        from ..engine.folds import train_folds

        s = train_folds(cfg, args.out, args.folds, args.resume)
        print(f"{s['folds']}-fold test accuracy: {s['mean'] * 100:.2f} +- {s['std'] * 100:.2f} %")
        return 0
    from ..engine.trainer import train

    train(cfg, args.out, resume=args.resume)
    return 0


def teach_command(args: argparse.Namespace) -> int:
    from ..engine.distill import teach

    given = {"tta": args.tta, "temperature": args.temperature, "device": args.device, "batch_size": args.batch_size}
    teach(run_config(args), args.teachers, args.out, **{k: v for k, v in given.items() if v is not None})
    print(f"train with: --set data.teacher_targets={args.out} (and loss.distill_weight, the teachers' share)")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from ..config import apply_overrides
    from ..engine.decomposition import summary_line
    from ..engine.evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(args.checkpoint, args.dataset, args.root, args.split,
                            options=apply_overrides({}, args.options), face_detector=args.face_detector,
                            tta=args.tta, device=args.device, batch_size=args.batch_size, out=args.out)
    print(f"{args.dataset}/{args.split}: accuracy {m['accuracy']:.4f}, mean class accuracy "
          f"{m['mean_class_accuracy']:.4f} on {m['num_samples']} images"
          + (f" (skipped {m['skipped']})" if m["skipped"] else "") + f"; report in {args.out}")
    if "decomposition" in m:
        print(summary_line(m["decomposition"]))
    return 0


def explain_command(args: argparse.Namespace) -> int:
    from ..config import apply_overrides
    from ..engine.explain import explain_checkpoint, map_similarity

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
    from ..engine.demo import run_demo

    s = run_demo(args.out, args.overrides)
    out, sel = Path(args.out), s["selected"]
    print()
    print(f"FDRL on the synthetic set: test accuracy {s['test_accuracy'] * 100:.2f} % "
          f"(mean class {s['test_mean_class_accuracy'] * 100:.2f} %), {sel}.pt chosen on validation.")
    print(f"Report: {out / ('report_' + sel)}/ (metrics.json, confusion_matrix.png, alpha_by_class.png, tsne.png)"
          f" and {out / 'curves.png'}")
    print("Train on a real data set, e.g. FER2013 in its image-folder release:")
    print("  fdrl train --recipe fer2013 --set data.root=/path/to/fer2013 --out runs/fer2013   # fdrl recipes: all")
    return 0
