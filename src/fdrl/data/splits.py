"""Seeded validation carving and subject-independent k-fold splits.

Split names understood by every data set (see :func:`fdrl.data.create_dataset`):
- the publisher's own splits (``train``, ``val``, ``test``, ...);
- ``<split>/fit`` and ``<split>/holdout``: a seeded, stratified ``val_fraction`` carved out of ``<split>``
  (identical across runs) — the validation split for benchmarks that have none;
- ``fold<k>/train`` and ``fold<k>/test`` for sequence data sets: subject-independent k-fold.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def _stable_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(fit, holdout) index lists; each class contributes round(fraction * n) (at least 1 when n >= 2)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {fraction}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[int(y)].append(i)
    fit, hold = [], []
    for y in sorted(by_class):
        idx = np.array(by_class[y])
        rng = np.random.default_rng(_stable_seed("holdout", seed, y, len(idx)))
        idx = idx[rng.permutation(len(idx))]
        n = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        else:
            n = 0
        hold.extend(idx[:n].tolist())
        fit.extend(idx[n:].tolist())
    return sorted(fit), sorted(hold)


def subject_folds(subjects: Sequence[str], k: int, seed: int = 0) -> list[list[int]]:
    """Sample indices of each of ``k`` folds; all samples of a subject fall in the same fold.

    Subjects are shuffled with a fixed seed, then assigned greedily to the fold with the fewest samples so
    that folds are balanced in size.
    """
    by_subject: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(subjects):
        if s is None:
            raise ValueError(f"sample {i} has no subject id; subject-independent folds need one")
        by_subject[s].append(i)
    if len(by_subject) < k:
        raise ValueError(f"{k} folds need at least {k} subjects, found {len(by_subject)}")
    names = sorted(by_subject)
    rng = np.random.default_rng(_stable_seed("folds", seed, k))
    names = [names[i] for i in rng.permutation(len(names))]
    names.sort(key=lambda s: -len(by_subject[s]))  # stable sort keeps the shuffled order within ties
    folds: list[list[int]] = [[] for _ in range(k)]
    for s in names:
        min(folds, key=len).extend(by_subject[s])
    return [sorted(f) for f in folds]
