"""Seeded validation carving and subject-independent k-fold splits.

Split names understood by every data set (see :func:`fdrl.data.create_dataset`):
- the publisher's own splits (``train``, ``val``, ``test``, ...);
- ``<split>/fit`` and ``<split>/holdout``: a seeded, stratified ``val_fraction`` carved out of ``<split>``
  (identical across runs) — the validation split for benchmarks that have none. Where samples carry a subject
  id (sequence data sets) whole subjects are carved, since one sequence's near-identical frames on both sides
  would make validation accuracy a measure of memorisation;
- ``fold<k>/train`` and ``fold<k>/test`` for sequence data sets: subject-independent k-fold;
- ``<split>/fold<k>/train`` and ``<split>/fold<k>/test`` for every other data set: a seeded, stratified k-fold of
  ``<split>`` (cross-validation where a benchmark's test labels are withheld), whole subjects per fold where samples
  carry one (SFEW: the movie).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def _stable_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {fraction}")


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int = 0,
                       groups: Sequence[str | None] | None = None) -> tuple[list[int], list[int]]:
    """(fit, holdout) index lists; each class contributes round(fraction * n) (at least 1 when n >= 2).

    ``groups``: per-sample subject ids; when any is set, :func:`grouped_holdout` carves whole subjects instead.
    """
    if groups is not None and any(g is not None for g in groups):
        return grouped_holdout(labels, groups, fraction, seed)
    _check_fraction(fraction)
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


def grouped_holdout(labels: Sequence[int], groups: Sequence[str | None], fraction: float,
                    seed: int = 0) -> tuple[list[int], list[int]]:
    """(fit, holdout) index lists in which every group (subject) lies wholly on one side; a sample without a
    group is a group of its own.

    Groups are shuffled with a fixed seed, then each joins the holdout if that brings the holdout's class
    counts closer (L1) to ``fraction`` of each class's count: roughly stratified and roughly ``fraction`` in
    size, as whole subjects allow. With two or more groups both sides keep at least one.
    """
    _check_fraction(fraction)
    by_group: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[(0, g) if g is not None else (1, str(i))].append(i)
    classes = sorted({int(y) for y in labels})
    col = {y: j for j, y in enumerate(classes)}
    counts = {g: np.bincount([col[int(labels[i])] for i in idx], minlength=len(classes))
              for g, idx in by_group.items()}
    target = fraction * np.bincount([col[int(y)] for y in labels], minlength=len(classes))
    names = sorted(by_group)
    rng = np.random.default_rng(_stable_seed("grouped-holdout", seed, len(names)))
    names = [names[i] for i in rng.permutation(len(names))]
    held, have = [], np.zeros(len(classes))
    for g in names:
        if np.abs(have + counts[g] - target).sum() < np.abs(have - target).sum():
            held.append(g)
            have += counts[g]
    if len(names) >= 2 and not held:
        held.append(min(names, key=lambda g: np.abs(counts[g] - target).sum()))
    if len(names) >= 2 and len(held) == len(names):
        held.pop()
    hold = sorted(i for g in held for i in by_group[g])
    chosen = set(hold)
    return [i for i in range(len(labels)) if i not in chosen], hold


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


def stratified_group_folds(labels: Sequence[int], groups: Sequence[str | None], k: int,
                           seed: int = 0) -> list[list[int]]:
    """Sample indices of each of ``k`` folds, stratified by label, every group (subject) wholly in one fold; a
    sample without a group is a group of its own, so ungrouped data get a plain stratified k-fold.

    Groups are shuffled with a fixed seed and placed largest first, each in the fold whose class counts it brings
    closest (L1) to ``1/k`` of every class's count, ties to the smaller fold.
    """
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    by_group: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[(0, g) if g is not None else (1, str(i))].append(i)
    if len(by_group) < k:
        raise ValueError(f"{k} folds need at least {k} groups, found {len(by_group)}")
    classes = sorted({int(y) for y in labels})
    col = {y: j for j, y in enumerate(classes)}
    counts = {g: np.bincount([col[int(labels[i])] for i in idx], minlength=len(classes))
              for g, idx in by_group.items()}
    target = np.bincount([col[int(y)] for y in labels], minlength=len(classes)) / k
    names = sorted(by_group)
    rng = np.random.default_rng(_stable_seed("group-folds", seed, k, len(names)))
    names = [names[i] for i in rng.permutation(len(names))]
    names.sort(key=lambda g: -len(by_group[g]))  # stable: equal sizes keep the seeded order
    have = np.zeros((k, len(classes)))
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in names:
        cost = np.abs(have + counts[g] - target).sum(1) - np.abs(have - target).sum(1)
        f = min(range(k), key=lambda j: (cost[j], have[j].sum()))
        have[f] += counts[g]
        folds[f].extend(by_group[g])
    return [sorted(f) for f in folds]
