"""fdrl: Feature Decomposition and Reconstruction Learning (Ruan et al., CVPR 2021) for facial expressions.

Public API (imported lazily so that ``fdrl --help`` does not pay for importing torch)::

    fdrl.create_model("fdrl_resnet18", num_classes=7)
    fdrl.list_models()
    fdrl.FDRLCriterion, fdrl.LossConfig
    fdrl.load_checkpoint(path)
    fdrl.load_config("fer2013", ["data.root=..."]), fdrl.list_recipes()
    fdrl.train(config, out_dir), fdrl.evaluate_checkpoint(checkpoint, dataset, root, split)
    fdrl.teach(config, teachers, out)
    fdrl.Recognizer(checkpoint=None), fdrl.create_detector(name)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "fdrl.models",
    "list_models": "fdrl.models",
    "FDRLConfig": "fdrl.models",
    "BaselineConfig": "fdrl.models",
    "ModelOutput": "fdrl.models",
    "FDRLCriterion": "fdrl.losses",
    "LossConfig": "fdrl.losses",
    "create_criterion": "fdrl.losses",
    "param_groups": "fdrl.optim",
    "build_optimizer": "fdrl.optim",
    "build_scheduler": "fdrl.optim",
    "OptimConfig": "fdrl.optim",
    "SchedConfig": "fdrl.optim",
    "load_checkpoint": "fdrl.checkpoint",
    "CheckpointError": "fdrl.checkpoint",
    "TrainConfig": "fdrl.config",
    "Preprocessing": "fdrl.config",
    "load_config": "fdrl.config",
    "list_recipes": "fdrl.recipes",
    "evaluate_checkpoint": "fdrl.engine.evaluate",
    "train": "fdrl.engine.trainer",
    "teach": "fdrl.engine.distill",
    "create_detector": "fdrl.faces",
    "FdrlError": "fdrl.errors",
    "Recognizer": "fdrl.inference.recognizer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fdrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", *_LAZY]
