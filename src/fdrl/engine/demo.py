"""``fdrl demo``: FDRL trained on the generated synthetic set, end to end in a few minutes on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import load_config
from .trainer import train

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


def run_demo(out: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Train the demo in ``out`` (a run already there is started over) and return the run's summary."""
    cfg = load_config(None, DEMO_OVERRIDES + list(overrides))
    out = Path(out)
    if out.exists() and (out / "last.pt").exists():
        print(f"note: {out} already holds a run; starting over")
        for f in ("metrics.jsonl", "last.pt", "best.pt"):
            (out / f).unlink(missing_ok=True)
    return train(cfg, out)
