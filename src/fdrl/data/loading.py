"""A run's splits as decoded uint8 tensor sets: one builder for training and for evaluating a checkpoint.

Both get the same split names (``val`` carved from train where a benchmark has none), the face crop of the
preprocessing record, the decode cache, and the check that no sample sits in two splits. A run's training split
may be joined by other labelled data (``data.extra_train``): each part is listed, mapped onto the run's classes by
name, kept apart from its validation and test samples, decoded (and cached) on its own, and read by rows.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from ..config import DataConfig, TrainConfig, from_dict
from ..errors import ConfigError, DataError, TrainingError, UnknownDatasetError
from .base import FERDataset
from .datasets import class_indices
from .registry import create_dataset, dataset_info, has_official_val, is_test_split, needs_root, refuse_test_split
from .teachers import blend_teacher_targets, describe, read_teacher_targets
from .tensors import TensorSet, concat_sets, decode_dataset


def _quiet(msg: str) -> None:
    pass


def cache_dir(d: DataConfig) -> str | None:
    """Where decoded splits are cached (None: ``data.cache=false``)."""
    return (d.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "fdrl")) if d.cache else None


def train_split_name(d: DataConfig) -> str:
    """The split a run trains on: ``train/fit`` when its ``val`` is carved from train (never train on both)."""
    if d.train_split == "train" and d.val_split == "val" and not has_official_val(d.dataset, d.root):
        return "train/fit"
    return d.train_split


def list_split(d: DataConfig, split: str, seed: int):
    """The :class:`~fdrl.data.base.FERDataset` of ``split`` with the preprocessing's face crop, nothing decoded."""
    ds = create_dataset(d.dataset, d.root, split, on_error=d.on_error, val_fraction=d.val_fraction, seed=seed,
                        **d.options)
    ds.set_face_crop(d.preprocessing.face_detector, d.preprocessing.face_margin)
    if d.max_samples is not None and len(ds) > d.max_samples:
        step = len(ds) / d.max_samples
        ds = ds.subset([int(i * step) for i in range(d.max_samples)], ds.split)
    return ds


def _decode(d: DataConfig, ds: FERDataset, soft: bool, log: Callable[[str], None]) -> TensorSet:
    p = d.preprocessing
    return decode_dataset(ds, p.input_size, p.grayscale, soft=soft, cache_dir=cache_dir(d), log=log,
                          source_size=p.source_size, workers=d.decode_workers)


def build_split(d: DataConfig, split: str, seed: int, role: str, soft: bool = False,
                log: Callable[[str], None] = _quiet) -> TensorSet:
    """Split ``split`` decoded at the preprocessing's size (or read from the cache); ``role`` names it in logs."""
    ds = list_split(d, split, seed)
    out = _decode(d, ds, soft, log)
    log(f"data {role}: {ds.summary()}" + (f"; excluded by protocol {ds.excluded}" if ds.excluded else ""))
    return out


def check_disjoint(ids: set[str], other: TensorSet, role: str, split: str, other_role: str = "train") -> None:
    """Refuse a validation or test split that shares samples with the training (or, for test, the validation)
    split."""
    leak = ids & set(other.ids)
    if leak:
        raise TrainingError(f"{role} split {split!r} shares {len(leak)} samples with {other_role} "
                            f"(e.g. {sorted(leak)[:3]}); model selection/test would be contaminated")


def training_ids(run: TrainConfig, root: str | None) -> set[str]:
    """The ids of the samples a run (its config, e.g. a checkpoint's) trained on, listed from ``root`` -- a copy
    of the same data set -- with the run's own options and cut (its ``split_seed`` and ``val_fraction``)."""
    d = dataclasses.replace(run.data, root=root)
    return {s.id for s in list_split(d, train_split_name(d), run.split_seed).samples}


def seen_faces(trained: dict[str, Any] | None, cfg: TrainConfig,
               data: dict[str, TensorSet]) -> tuple[TrainConfig, dict[str, int]] | None:
    """What a checkpoint saw of a run's held-out faces: the run its training config (``trained``) describes and,
    for each of ``data``'s ``val`` and ``test`` splits that shares samples with that run's training split (listed
    from ``cfg``'s root, with the checkpoint's own cut), how many. ``None`` for a checkpoint without a readable
    config or trained on another data set. A fine-tune and a teacher answer for these faces differently."""
    if not trained:
        return None
    try:
        run = from_dict(TrainConfig, trained)
    except ConfigError:
        return None
    if run.data.dataset != cfg.data.dataset:
        return None
    seen = training_ids(run, cfg.data.root)
    return run, {role: n for role in ("val", "test") if role in data and (n := len(seen & set(data[role].ids)))}


def load_splits(cfg: TrainConfig, log: Callable[[str], None] = _quiet) -> dict[str, TensorSet]:
    """Decode train/val/test into uint8 tensors; refuse a test split as ``val`` (runs select and are tuned on val)
    and overlapping ids between the three. With ``data.teacher_targets`` the training targets are the blend of
    the teachers' probabilities and the labels (:func:`~fdrl.data.teachers.blend_teacher_targets`)."""
    d = cfg.data
    refuse_test_split(d.dataset, d.val_split, "select the checkpoint or tune the recipe (data.val_split)")
    soft = d.options.get("label_mode") == "distribution"
    train_split = train_split_name(d)
    if train_split != d.train_split:
        log(f"{d.dataset} has no validation split of its own: val = train/holdout "
            f"({d.val_fraction:.0%}, seeded), train = train/fit")
    check_extra_train(d)  # before anything is decoded
    teacher = read_teacher_targets(d.teacher_targets) if d.teacher_targets else None  # likewise
    out: dict[str, TensorSet] = {}
    for role, split in (("train", train_split), ("val", d.val_split), ("test", d.test_split)):
        if split:
            out[role] = build_split(d, split, cfg.split_seed, role, soft=soft and role == "train", log=log)
    if d.extra_train:
        out["train"] = join_extra_train(cfg, out, log)
    if teacher is not None:
        out["train"] = blend_teacher_targets(out["train"], teacher, cfg.loss.distill_weight)
        log(f"data train: targets = {cfg.loss.distill_weight:g} x teachers + {1 - cfg.loss.distill_weight:g} x "
            f"labels, teachers from {describe(teacher)}")
    train_ids = set(out["train"].ids)
    for role in ("val", "test"):
        if role in out:
            split = getattr(d, role + "_split")
            check_disjoint(train_ids, out[role], role, split)
            if list(out[role].classes) != list(out["train"].classes):  # a label index would name another class
                raise TrainingError(f"{role} split {split!r} has classes "
                                    f"{list(out[role].classes)}, train has {list(out['train'].classes)}: every "
                                    f"split needs the same classes (a folder tree: the same class folders in each "
                                    f"split, or data.options.classes=[...] to fix the list)")
    if "val" in out and "test" in out:
        check_disjoint(set(out["val"].ids), out["test"], "test", d.test_split, other_role="val")
    return out


def val_split_name(d: DataConfig) -> str | None:
    """The split a run validates on: ``val`` means ``train/holdout`` for a data set without one of its own."""
    return _resolved(d.dataset, d.root, d.val_split)


def _base(split: str) -> str:
    return split.split("/")[0]


def _resolved(name: str, root: str | None, split: str | None) -> str | None:
    """``val`` as the split it means for a data set without a validation split of its own (``train/holdout``)."""
    return "train/holdout" if split == "val" and not has_official_val(name, root) else split


def check_extra_train(d: DataConfig) -> None:
    """Refuse a ``data.extra_train`` entry that names an unknown data set, lacks a root, or names a test split (of
    its data set) or a split of the run's own data set that the run already uses: training on a test split would
    contaminate every figure later reported on it, and the run's own splits would be duplicates or leaks."""
    own = {"test": d.test_split, "validation": val_split_name(d),
           "training": train_split_name(d)}
    for i, entry in enumerate(d.extra_train):
        where, name, root, split = f"data.extra_train[{i}]", entry["dataset"], entry["root"], entry["split"]
        try:
            info = dataset_info(name)
        except UnknownDatasetError as exc:
            raise ConfigError(f"{where}.dataset: {exc}") from None
        if root is None and needs_root(name):
            raise ConfigError(f"{where}.root: required: the folder (or file) of the {name} data set "
                              f"({info.description})")
        if is_test_split(name, split):
            raise DataError(f"{where}.split: {split!r} is a test split of {name}; training on it would contaminate "
                            f"every figure reported on it. Expected a training split of {name} "
                            f"(e.g. {info.splits[0]!r})")
        if name == d.dataset and _same_path(root, d.root):
            split = _resolved(name, root, split)
            hit = [f"{role} split {s!r}" for role, s in own.items() if s and _base(s) == _base(split)]
            if hit:
                at = f" at {root}" if root is not None else ""
                raise DataError(f"{where}: {name}/{entry['split']}{at} overlaps this run's own "
                                f"{' and '.join(hit)}; expected another data set's training split (or another "
                                f"copy's, under another root)")


def _same_path(a: str | None, b: str | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None
                                         and os.path.realpath(a) == os.path.realpath(b))


def list_extra(d: DataConfig, i: int, seed: int, classes: list[str],
               held_out: set[str]) -> tuple[FERDataset | None, Counter[str], int]:
    """The samples of ``data.extra_train[i]`` a run with ``classes`` trains on, nothing decoded: those of a class
    the run lacks (matched by name, :func:`~fdrl.data.datasets.canonical_class`) and those whose id is in
    ``held_out`` (the run's validation and test ids) are dropped. Returns the samples kept (None: none), the
    dropped counts by the part's own class name, and the number dropped as held out."""
    entry = d.extra_train[i]
    part = dataclasses.replace(d, dataset=entry["dataset"], root=entry["root"], options=entry["options"],
                               extra_train=[])
    try:
        ds = list_split(part, entry["split"], seed)
    except DataError as exc:
        raise DataError(f"data.extra_train[{i}] ({entry['dataset']}/{entry['split']}): {exc}") from None
    to_run = class_indices(ds.classes, classes)
    missing: Counter[str] = Counter()
    held, keep = 0, []
    for j, (sample, label) in enumerate(zip(ds.samples, ds.labels, strict=True)):
        if to_run[label] < 0:
            missing[ds.classes[label]] += 1
        elif sample.id in held_out:
            held += 1
        else:
            keep.append(j)
    if not keep:
        return None, missing, held
    return (ds if len(keep) == len(ds) else ds.subset(keep, ds.split)), missing, held


def to_classes(part: TensorSet, classes: list[str], soft: bool) -> TensorSet:
    """``part`` with labels of ``classes`` (matched by name; every label of ``part`` must have a match) and the
    targets of a run whose training targets are ``soft`` or not: a hard label becomes a one-hot soft target; a
    soft target is remapped class by class, its mass on classes that ``classes`` lacks dropped and the rest
    renormalised; a run with hard targets takes the hard label (the argmax where only votes were given)."""
    to_run = torch.tensor(class_indices(part.classes, classes), dtype=torch.int64)
    labels = to_run[part.labels]
    if (labels < 0).any():
        raise DataError(f"labels of classes {sorted({part.classes[int(j)] for j in part.labels[labels < 0]})} "
                        f"have no match in {classes}")
    targets = labels
    if soft and part.targets.dim() == 1:
        targets = torch.nn.functional.one_hot(labels, len(classes)).float()
    elif soft:
        keep = to_run >= 0
        targets = torch.zeros(len(part), len(classes)).index_add_(1, to_run[keep], part.targets[:, keep].float())
        mass = targets.sum(1, keepdim=True)
        onehot = torch.nn.functional.one_hot(labels, len(classes)).float()
        targets = torch.where(mass > 0, targets / mass.clamp_min(1e-12), onehot)
    return TensorSet(part.images, targets, labels, part.ids, list(classes), part.skipped, part.reader)


def join_extra_train(cfg: TrainConfig, out: dict[str, TensorSet], log: Callable[[str], None] = _quiet) -> TensorSet:
    """``out["train"]`` followed by each ``data.extra_train`` part (in the order listed), decoded with the run's
    preprocessing and cache, its classes and targets those of the run's training split, its samples in
    ``out``'s validation or test split dropped; one log line per part says what it added and what it dropped."""
    d, first = cfg.data, out["train"]
    soft = first.targets.dim() == 2
    held_out = {i for role in ("val", "test") if role in out for i in out[role].ids}
    train_ids = set(first.ids)
    parts = [first]
    for i, entry in enumerate(d.extra_train):
        name = f"{entry['dataset']}/{entry['split']}"
        ds, missing, held = list_extra(d, i, cfg.split_seed, first.classes, held_out)
        text = "0 samples"
        if ds is not None:
            try:
                # a part without soft targets decodes as a hard one (and shares that cache file); to_classes
                # makes its labels one-hot where the run's targets are soft
                part = to_classes(_decode(d, ds, soft and ds.has_soft_targets, log), first.classes, soft)
            except DataError as exc:
                raise DataError(f"data.extra_train[{i}] ({name}): {exc}") from None
            parts.append(part)
            counts = torch.bincount(part.labels, minlength=len(first.classes)).tolist()
            text = f"{len(part)} samples ({', '.join(f'{c} {n}' for c, n in zip(first.classes, counts, strict=True))})"
            if part.skipped:
                text += f"; skipped {len(part.skipped)}"
            if ds.excluded:
                text += f"; excluded by protocol {ds.excluded}"
            if dup := len(train_ids & set(part.ids)):
                text += f"; {dup} share an id with a sample of the training split (kept)"
        lacking = f": {', '.join(f'{c} {n}' for c, n in sorted(missing.items()))}" if missing else ""
        log(f"data train+{name}: {text}; dropped {sum(missing.values())} (not in classes{lacking}), "
            f"{held} (in val/test)")
    joined = concat_sets(parts)
    if len(parts) > 1:
        log(f"data train: {len(joined)} samples in {len(parts)} parts")
    return joined


def labelled_faces(dataset: str, root: str | None, split: str, preprocessing, classes: list[str]) -> tuple:
    """A labelled split's faces for a model, as uint8 ``(N, C, S, S)`` at the resolution its training decoded
    (``source_size`` where set, else ``input_size``; :meth:`fdrl.Recognizer.predict_tensor` resizes them as
    training did), and their labels as indices of the model's ``classes``: a data set's class order and a model's
    may differ, so they are matched by name. Callers choosing anything from these faces refuse a test split first
    (:func:`fdrl.data.registry.refuse_test_split`)."""
    import torch

    data = decode_dataset(create_dataset(dataset, root, split), preprocessing.source_size or preprocessing.input_size,
                          preprocessing.grayscale, cache_dir=None, log=_quiet)
    to_model = class_indices(data.classes, classes)
    missing = sorted(c for c, j in zip(data.classes, to_model, strict=True) if j < 0)
    if missing:
        raise TrainingError(f"{dataset}/{split} has classes the model lacks: {missing} (model: {classes})")
    return data.images, torch.tensor([to_model[int(i)] for i in data.labels])
