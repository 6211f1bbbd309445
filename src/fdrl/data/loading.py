"""A run's splits as decoded uint8 tensor sets: one builder for training and for evaluating a checkpoint.

Both get the same split names (``val`` carved from train where a benchmark has none), the face crop of the
preprocessing record, the decode cache, and the check that no sample sits in two splits.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from ..config import DataConfig, TrainConfig
from ..errors import TrainingError
from .datasets import class_indices
from .registry import create_dataset, has_official_val, refuse_test_split
from .tensors import TensorSet, decode_dataset


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


def build_split(d: DataConfig, split: str, seed: int, role: str, soft: bool = False,
                log: Callable[[str], None] = _quiet) -> TensorSet:
    """Split ``split`` decoded at the preprocessing's size (or read from the cache); ``role`` names it in logs."""
    p = d.preprocessing
    ds = list_split(d, split, seed)
    out = decode_dataset(ds, p.input_size, p.grayscale, soft=soft, cache_dir=cache_dir(d), log=log,
                         source_size=p.source_size, workers=d.decode_workers)
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


def load_splits(cfg: TrainConfig, log: Callable[[str], None] = _quiet) -> dict[str, TensorSet]:
    """Decode train/val/test into uint8 tensors; refuse a test split as ``val`` (runs select and are tuned on val)
    and overlapping ids between the three."""
    d = cfg.data
    refuse_test_split(d.dataset, d.val_split, "select the checkpoint or tune the recipe (data.val_split)")
    soft = d.options.get("label_mode") == "distribution"
    train_split = train_split_name(d)
    if train_split != d.train_split:
        log(f"{d.dataset} has no validation split of its own: val = train/holdout "
            f"({d.val_fraction:.0%}, seeded), train = train/fit")
    out: dict[str, TensorSet] = {}
    for role, split in (("train", train_split), ("val", d.val_split), ("test", d.test_split)):
        if split:
            out[role] = build_split(d, split, cfg.split_seed, role, soft=soft and role == "train", log=log)
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
