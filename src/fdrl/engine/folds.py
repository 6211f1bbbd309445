"""The k-fold protocol (CK+, MMI, Oulu-CASIA): one run per fold, subject-independent folds, the test accuracies
summarised."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..data.registry import fold_splits
from .trainer import train


def train_folds(cfg: TrainConfig, out: str | Path, k: int, resume: bool = False) -> dict[str, Any]:
    """Train fold 0..k-1 of ``cfg``'s data set (each selects on its own holdout), write ``folds_summary.json``
    and return it: every fold's test accuracy, their mean and sample standard deviation."""
    out = Path(out)
    accs, maccs = [], []
    for fold in range(k):
        c = copy.deepcopy(cfg)
        c.data.options = {**c.data.options, "num_folds": k}
        c.data.train_split, c.data.val_split, c.data.test_split = fold_splits(fold)
        fold_dir = out / f"fold{fold}"
        s = train(c, fold_dir, resume=resume and (fold_dir / "last.pt").is_file())
        accs.append(s["test_accuracy"])
        maccs.append(s["test_mean_class_accuracy"])
    summary: dict[str, Any] = {
        "folds": k, "test_accuracy": accs, "mean": statistics.mean(accs),
        "std": statistics.stdev(accs) if k > 1 else 0.0, "mean_class_accuracy_mean": statistics.mean(maccs),
    }
    (out / "folds_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
