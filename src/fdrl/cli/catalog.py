"""``fdrl models`` and ``fdrl recipes``: what the package holds."""

from __future__ import annotations

import argparse

from ..errors import FdrlError
from ..inference.packaged import PACKAGED_MODELS
from .options import add_overrides


def add_parsers(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="list the registered models and their parameter counts")
    m.add_argument("name", nargs="?", help="one model: also print its full config")
    m.add_argument("--num-classes", type=int, default=7)
    m.set_defaults(func=models_command)

    r = sub.add_parser("recipes", help="list the training recipes shipped in the package")
    r.add_argument("name", nargs="?", help="one recipe: print its resolved config (every key, as a run stores it)")
    r.add_argument("--baseline", action="store_true", help="the recipe's baseline twin")
    add_overrides(r)
    r.set_defaults(func=recipes_command)


def models_command(args: argparse.Namespace) -> int:
    from ..models import create_model, get_entry, list_models

    names = [args.name] if args.name else list_models()
    for name in names:
        model = create_model(name, num_classes=args.num_classes)
        n = sum(p.numel() for p in model.parameters())
        trunk = sum(p.numel() for p in model.backbone.parameters())
        print(f"{name:20s} {n / 1e6:6.2f} M parameters (trunk {trunk / 1e6:.2f} M, heads {(n - trunk) / 1e6:.3f} M)"
              f"  K={args.num_classes}  {get_entry(name).description}")
        if args.name:
            print(model.config)
    if not args.name:
        from ..inference.lookup import describe_packaged, packaged_checkpoint

        for name in PACKAGED_MODELS:
            try:
                where, about = str(packaged_checkpoint(name)), describe_packaged(name)
            except FdrlError as exc:  # a listing shows a missing file instead of failing
                where, about = f"missing ({exc})", ""
            print(f"shipped model {name!r}: {where} (fdrl predict --model {name})")
            if about:
                print(f"    {about}")
    return 0


def recipes_command(args: argparse.Namespace) -> int:
    if args.name:  # the whole resolved config: torch is imported only here
        from ..config import dump_yaml, load_config

        print(dump_yaml(load_config(args.name, args.overrides, baseline=args.baseline)), end="")
        return 0
    from ..recipes import describe, list_recipes

    names = list_recipes()
    width = max(map(len, names))
    for name in names:
        print(f"{name:{width}s}  {describe(name)}")
    print("\nfdrl train --recipe NAME [--baseline] --set data.root=PATH --out RUN; every key: fdrl recipes NAME")
    return 0
