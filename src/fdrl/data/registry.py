"""One registry of data sets; ``create_dataset(name, root, split)`` resolves derived splits.

Derived split names: ``<split>/fit`` and ``<split>/holdout`` (a seeded, stratified ``val_fraction`` carved from
``<split>``, by whole subjects where samples carry one; ``val`` means ``train/holdout`` for data sets without an
official validation split), and
``fold<k>/train`` / ``fold<k>/test`` (subject-independent, ``num_folds`` folds) for sequence data sets.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, UnknownDatasetError, unknown_name
from . import datasets as D
from . import sequences as S
from .base import FERDataset
from .splits import stratified_group_folds, stratified_holdout, subject_folds
from .synthetic import CLASSES as SYN_CLASSES
from .synthetic import build_synthetic


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    build: Callable[..., FERDataset]
    splits: tuple[str, ...]  # the publisher's own splits
    classes: tuple[str, ...]
    description: str
    kfold: bool = False  # sequence sets: use fold<k>/train|test
    has_val: bool = False  # an official validation split exists
    # Splits whose figures are this project's test figures: never select a checkpoint or tune anything on them.
    test_splits: tuple[str, ...] = ("test",)


_DATASETS: dict[str, DatasetInfo] = {}


def _register(info: DatasetInfo) -> None:
    _DATASETS[info.name] = info


_register(DatasetInfo("rafdb", D.build_rafdb, ("train", "test"), D.RAFDB_CLASSES,
                      "RAF-DB basic: EmoLabel/list_patition_label.txt + Image/aligned|original"))
# FER2013's PublicTest is the test figure this project reports (PrivateTest is left untouched), so ``val`` -- the
# Kaggle name for PublicTest, kept for loading and evaluating -- is a test split too: runs select on
# ``train/holdout``.
_register(DatasetInfo("fer2013", D.build_fer2013, ("train", "val", "test", "publictest", "privatetest"),
                      D.FER2013_CLASSES, "FER2013: fer2013.csv or train|test/<class>/ image folders", has_val=True,
                      test_splits=("test", "val", "publictest", "privatetest")))
_register(DatasetInfo("ferplus", D.build_ferplus, ("train", "val", "test"), D.FERPLUS_CLASSES,
                      "FERPlus: FER2013Train|Valid|Test/label.csv or fer2013new.csv + fer2013.csv", has_val=True))
_register(DatasetInfo("affectnet", D.build_affectnet, ("train", "test"), D.AFFECTNET_CLASSES_8[:7],
                      "AffectNet manual: training.csv/validation.csv (+box crop) or train_set|val_set/*_exp.npy"))
_register(DatasetInfo("sfew", D.build_sfew, ("train", "test"), D.SFEW_CLASSES,
                      "SFEW 2.0: Train|Val/<Class>/ (Val is the test split)"))
_register(DatasetInfo("ckplus", S.build_ckplus, ("all",), S.CKPLUS_VARIANTS["6"][0],
                      "CK+: cohn-kanade-images + Emotion (last 3 frames) or CK+48/<class>/", kfold=True))
_register(DatasetInfo("mmi", S.build_mmi, ("all",), S.MMI_CLASSES,
                      "MMI: Sessions/<id>/Sxxx-yyy.avi + .xml (middle 3 frames) or <subject>/<emotion>/<seq>/",
                      kfold=True))
_register(DatasetInfo("oulu_casia", S.build_oulu_casia, ("all",), S.OULU_CLASSES,
                      "Oulu-CASIA VIS: VL/Strong/Pxxx/<Emotion>/ (last 3 frames)", kfold=True))
_register(DatasetInfo("folder", D.build_folder, ("train", "val", "test", "all"), (),
                      "any root/<class>/* or root/<split>/<class>/* tree"))
_register(DatasetInfo("synthetic", build_synthetic, ("train", "val", "test"), SYN_CLASSES,
                      "generated drawn faces, 7 classes (default and tests; no files)", has_val=True))


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    if name not in _DATASETS:
        raise unknown_name("dataset", name, list_datasets(), UnknownDatasetError)
    return _DATASETS[name]


def is_test_split(name: str, split: str) -> bool:
    """Whether ``split`` of data set ``name`` holds test samples (derived parts such as ``test/holdout`` and
    ``fold<k>/test`` included): figures on it are reported, never used to select or tune."""
    info = dataset_info(name)
    base = split.lower().split("/")
    if info.kfold and _FOLD.match("/".join(base[:2])):
        return base[1] == "test"
    return base[0] in info.test_splits


def refuse_test_split(name: str, split: str | None, purpose: str) -> None:
    """Raise :class:`DataError` when ``split`` is a test split of ``name``; ``purpose`` says what it was asked
    for (``"select the checkpoint"``, ``"choose the face margin"``) so the message names the mistake."""
    if split and is_test_split(name, split):
        extra = (" (FER2013's 'val' is PublicTest, this project's FER2013 test figure)"
                 if name == "fer2013" and split.lower().split("/")[0] == "val" else "")
        raise DataError(f"{name}: split {split!r} is a test split{extra}; it may be reported, never used to {purpose}. "
                        f"Use a validation split such as 'train/holdout' (carved from train, data.val_fraction).")


def needs_root(name: str) -> bool:
    """Whether data set ``name`` is read from a root folder or file (every one but the generated ``synthetic``)."""
    return name != "synthetic"


def fold_splits(fold: int, base: str | None = None) -> tuple[str, str | None, str]:
    """The (train, validation, test) split names of fold ``fold``: a sequence set's ``fold<k>/...`` (training on
    ``fold<k>/train/fit``, selecting on ``fold<k>/train/holdout``), or, with ``base``, the folds cut from a flat
    set's split (``<base>/fold<k>/train`` and ``/test``; no validation split: the last epoch is reported)."""
    if base is None:
        return f"fold{fold}/train/fit", f"fold{fold}/train/holdout", f"fold{fold}/test"
    return f"{base}/fold{fold}/train", None, f"{base}/fold{fold}/test"


def has_official_val(name: str, root: str | None) -> bool:
    """Whether ``val`` is the publisher's own split (else it means ``train/holdout``); a folder tree may have one."""
    info = dataset_info(name)
    return info.has_val or (name == "folder" and root is not None and (Path(root) / "val").is_dir())


_FOLD = re.compile(r"^fold(\d+)/(train|test)$")
_CV_FOLD = re.compile(r"^(.+)/fold(\d+)/(train|test)$")  # <split>/fold<k>/train|test of a flat data set


def _fold_part(base: FERDataset, fold: list[int], part: str, split: str) -> FERDataset:
    """``fold``'s samples of ``base`` (part "test") or all the others (part "train"), named ``split``."""
    test = set(fold)
    idx = sorted(test) if part == "test" else [i for i in range(len(base)) if i not in test]
    return base.subset(idx, split)


def create_dataset(name: str, root: str | None, split: str, transform: Callable | None = None,
                   on_error: str = "skip", val_fraction: float = 0.1, seed: int = 0, num_folds: int = 10,
                   **options) -> FERDataset:
    """Build data set ``name`` from ``root`` (as its publisher lays it out) for ``split``."""
    info = dataset_info(name)
    if root is None and needs_root(name):
        raise DataError(f"{name}: --root (data.root) is required")
    if split.endswith("/fit") or split.endswith("/holdout"):
        base_split, part = split.rsplit("/", 1)
        base = create_dataset(name, root, base_split, None, on_error, val_fraction, seed, num_folds, **options)
        # with subject ids (sequence sets) whole subjects are carved: no sequence's frames on both sides
        fit, hold = stratified_holdout(base.labels, val_fraction, seed, groups=[s.subject for s in base.samples])
        ds = base.subset(fit if part == "fit" else hold, split)
    elif not info.kfold and (m := _CV_FOLD.match(split)):
        base_split, k = m.group(1), int(m.group(2))
        if k >= num_folds:
            raise DataError(f"{name}: fold {k} of {split!r} does not exist with num_folds={num_folds}")
        base = create_dataset(name, root, base_split, None, on_error, val_fraction, seed, num_folds, **options)
        try:
            folds = stratified_group_folds(base.labels, [s.subject for s in base.samples], num_folds, seed)
        except ValueError as exc:
            raise DataError(f"{name}/{base_split}: {exc}") from exc
        ds = _fold_part(base, folds[k], m.group(3), split)
    elif split == "val" and not has_official_val(name, root):
        return create_dataset(name, root, "train/holdout", transform, on_error, val_fraction, seed, num_folds,
                              **options)
    elif info.kfold:
        m = _FOLD.match(split)
        if split != "all" and not m:
            raise DataError(f"{name}: split must be 'all', 'fold<k>/train' or 'fold<k>/test' (k < {num_folds}), "
                            f"optionally + '/fit' or '/holdout'; got {split!r}")
        base = info.build(root, "all", on_error=on_error, **options)
        if not m:
            ds = base
        else:
            k = int(m.group(1))
            if k >= num_folds:
                raise DataError(f"{name}: fold {k} does not exist with num_folds={num_folds}")
            try:
                folds = subject_folds([s.subject for s in base.samples], num_folds, seed)
            except ValueError as exc:
                raise DataError(f"{name}: {exc}") from exc
            ds = _fold_part(base, folds[k], m.group(2), split)
    else:
        if split not in info.splits:
            raise DataError(f"{name}: unknown split {split!r}; expected one of {list(info.splits)} "
                            f"or a derived split such as 'train/holdout'")
        ds = info.build(root, split, on_error=on_error, **options)
    ds.transform = transform
    if len(ds) == 0:
        raise DataError(f"{name}/{split}: no samples found under {root}")
    return ds
