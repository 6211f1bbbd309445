"""Distilling an ensemble into one model: the teachers' probabilities on a run's training split, computed once
(:func:`teach`, the library form of ``fdrl teach``).

The training split is built exactly as ``fdrl train`` builds it for the same config (preprocessing, decode cache,
split seed, ``data.extra_train`` parts). Each teacher sees every face un-augmented through its own preprocessing
(its input size, grey or colour, normalisation), flip-averaged with ``tta="flip"``; the file holds the mean over
the teachers of softmax(logits / T) (:mod:`fdrl.data.teachers`), which a student run reads through
``data.teacher_targets``. Cost: one inference pass over the training split per teacher (two with flip).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import LoadedCheckpoint, load_checkpoint
from ..config import Preprocessing, TrainConfig
from ..data.datasets import class_indices
from ..data.loading import load_splits, seen_faces, train_split_name, val_split_name
from ..data.preprocess import BatchTransform, as_model_input
from ..data.registry import is_test_split
from ..data.teachers import save_teacher_targets
from ..data.tensors import TensorSet
from ..errors import CheckpointError, ConfigError, DataError, TrainingError
from ..literals import TTA_MODES
from ..losses import LossConfig
from ..records import sha256_file
from ..runtime import resolve_device
from ..shipped import PACKAGED_MODELS, model_file
from .evaluate import predict


class TeacherInput:
    """Faces decoded at the run's preprocessing as a teacher's input: its size, grey or colour, normalisation."""

    def __init__(self, prep: Preprocessing) -> None:
        self.prep, self.normalise = prep, BatchTransform(prep.mean, prep.std)

    def __call__(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        return self.normalise(as_model_input(x, self.prep.input_size, self.prep.grayscale, self.prep.source_size))


def teacher_file(teacher: str | os.PathLike[str]) -> Path:
    """A teacher's checkpoint: a file, or the name of a model shipped in the package (``fer2013``, ``ferplus``)."""
    path = model_file(teacher)
    if not path.is_file():
        raise CheckpointError(f"teacher {os.fspath(teacher)!r}: no such checkpoint (a file, or a shipped model: "
                              f"{', '.join(PACKAGED_MODELS)})")
    return path


def refuse_held_out_split(cfg: TrainConfig) -> None:
    """Teacher targets are for the training split only: refuse a config whose training split is a test split or
    the validation split (a student trained on targets of its validation or test faces would select on or report
    faces its targets were computed on)."""
    d = cfg.data
    split = train_split_name(d)
    if is_test_split(d.dataset, split) or split == d.test_split:
        raise DataError(f"data.train_split: {split!r} is a test split of {d.dataset}; teacher targets are computed "
                        f"on a training split only")
    if split == val_split_name(d):
        raise DataError(f"data.train_split: {split!r} is this run's validation split; teacher targets are computed "
                        f"on the training split only")


def _column_of(loaded: LoadedCheckpoint, classes: list[str], name: str) -> list[int]:
    """For each of the teacher's classes, the run's class of that name; refuses a teacher of other classes."""
    to_run = class_indices(loaded.classes, classes)
    if len(loaded.classes) != len(classes) or -1 in to_run or len(set(to_run)) != len(to_run):
        raise ConfigError(f"teacher {name}: classes {list(loaded.classes)}, the run trains {list(classes)}; a teacher "
                          f"needs the run's classes (matched by name, in any order)")
    return to_run


def _check_seen_faces(loaded: LoadedCheckpoint, cfg: TrainConfig, data: dict[str, TensorSet], name: str,
                      log: Callable[[str], None]) -> None:
    """A teacher that trained on the run's test faces is refused (its targets would carry them into the student's
    test figure); one that trained on its validation faces is warned about (selection becomes optimistic)."""
    try:
        found = seen_faces(loaded.config, cfg, data)
    except DataError as exc:
        log(f"warning: teacher {name}: could not list the faces it trained on ({exc})")
        return
    if not found:
        return
    run, counts = found
    for role in ("test", "val"):
        n = counts.get(role, 0)
        if not n:
            continue
        split = getattr(cfg.data, f"{role}_split")
        text = (f"teacher {name}: {n} of the {len(data[role])} faces of {role} split {split!r} trained it (it was "
                f"trained on {train_split_name(run.data)!r} cut with seed {run.split_seed})")
        if role == "test":
            raise TrainingError(f"{text}; its targets would carry them into the student's test figure")
        log(f"warning: {text}: the student's validation figures will be optimistic; data.split_seed="
            f"{run.split_seed} keeps its held-out faces held out")


def teach(cfg: TrainConfig, teachers: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          tta: str = "none", temperature: float = 1.0, device: str = "auto", batch_size: int = 256,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``out``: the mean over ``teachers`` (checkpoint files or shipped model names) of softmax(logits /
    ``temperature``) on every sample of ``cfg``'s training split, with ``tta`` views averaged per teacher; a
    student trains on it with ``data.teacher_targets=out``. ``cfg``'s own ``data.teacher_targets`` is ignored.
    Returns what was written (sample and class counts, each teacher's accuracy and speed, the file's sha256)."""
    if not teachers:
        raise ConfigError("teach: name at least one teacher checkpoint")
    if tta not in TTA_MODES:
        raise ConfigError(f"teach: tta must be one of {list(TTA_MODES)}, got {tta!r}")
    if not temperature > 0:
        raise ConfigError(f"teach: temperature must be > 0, got {temperature}")
    refuse_held_out_split(cfg)
    files = [teacher_file(t) for t in teachers]  # before anything is decoded
    dev = resolve_device(device)
    run = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, teacher_targets=None),
                              loss=dataclasses.replace(cfg.loss, distill_weight=LossConfig.distill_weight))
    data = load_splits(run, log)
    train, d = data["train"], cfg.data
    total = torch.zeros(len(train), len(train.classes))
    rows = []
    for teacher, path in zip(teachers, files, strict=True):
        name = os.fspath(teacher)
        loaded = load_checkpoint(path)
        to_run = _column_of(loaded, train.classes, name)
        _check_seen_faces(loaded, cfg, data, name, log)
        prep = loaded.preprocessing
        if (prep.face_detector, prep.face_margin) != (d.preprocessing.face_detector, d.preprocessing.face_margin):
            log(f"note: teacher {name} was trained on faces cropped by {prep.face_detector!r} (margin "
                f"{prep.face_margin}); this run's are cropped by {d.preprocessing.face_detector!r} (margin "
                f"{d.preprocessing.face_margin})")
        t0 = time.perf_counter()
        res = predict(loaded.model.to(dev), train, TeacherInput(prep), dev, batch_size, tta, keep_features=False,
                      temperature=temperature)
        seconds = time.perf_counter() - t0
        probs = torch.zeros_like(total)
        probs[:, to_run] = torch.from_numpy(res["probs"]).float()
        total += probs
        accuracy = float((probs.argmax(1) == train.labels).float().mean())
        rows.append({"name": name, "sha256": sha256_file(path), "accuracy": accuracy, "seconds": round(seconds, 2),
                     "images_per_second": round(len(train) / max(seconds, 1e-9), 1)})
        log(f"teacher {name}: {len(train)} faces in {seconds:.1f} s ({rows[-1]['images_per_second']:.1f} img/s, tta "
            f"{tta}); accuracy {100 * accuracy:.2f} % on the training split")
        del loaded, res
    mean = total / len(files)
    accuracy = float((mean.argmax(1) == train.labels).float().mean())
    split = train_split_name(d)
    sha = save_teacher_targets(
        out, train.ids, train.classes, mean, teacher_names=[r["name"] for r in rows],
        teacher_sha256=[r["sha256"] for r in rows], teacher_accuracy=[r["accuracy"] for r in rows],
        temperature=float(temperature), tta=tta, dataset=d.dataset, split=split, split_seed=cfg.split_seed,
        extra_train=[f"{e['dataset']}/{e['split']}" for e in d.extra_train])
    log(f"teachers' mean: accuracy {100 * accuracy:.2f} % on the training split; wrote {out} ({len(train)} samples x "
        f"{len(train.classes)} classes, sha256 {sha[:12]})")
    return {"out": os.fspath(out), "sha256": sha, "num_samples": len(train), "classes": list(train.classes),
            "dataset": d.dataset, "split": split, "teachers": rows, "accuracy": accuracy}
