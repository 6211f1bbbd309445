"""Teacher targets: the class probabilities of trained models (the teachers) on a run's training split, computed
once by ``fdrl teach`` and blended into a student's training targets (``data.teacher_targets``,
``loss.distill_weight``).

The file is a plain dict of tensors, strings, numbers and lists, loaded with ``torch.load(weights_only=True)``:
its format name and version, the sample ids, the class names, the probabilities ``(N, K)`` (float32; float16 is
read too), and what made them (the teachers' names and sha256, the temperature, the test-time views, the data set
and split). A student's samples are found in it by id, never by position, and its classes by name, so a file
computed on a larger split or with the classes in another order still fits.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..checkpoint import atomic_save
from ..errors import DataError
from ..records import sha256_file
from .datasets import canonical_class
from .tensors import TensorSet

FORMAT = "fdrl-teacher-targets"
FORMAT_VERSION = 1
FIELD = "data.teacher_targets"


@dataclass
class TeacherTargets:
    """A teacher-targets file as read: its samples' ids, class names, probabilities and the record of what made
    them (``meta``: teachers, sha256s, temperature, tta, data set, split)."""

    path: str
    sha256: str
    ids: list[str]
    classes: list[str]
    probs: torch.Tensor  # (N, K) float32, rows summing to 1
    meta: dict[str, Any]


def save_teacher_targets(path: str | os.PathLike[str], ids: Sequence[str], classes: Sequence[str],
                         probs: torch.Tensor, **meta: Any) -> str:
    """Write a teacher-targets file atomically; ``meta`` holds plain values only (strings, numbers, lists of
    them). Returns the file's sha256."""
    probs = probs.detach().to("cpu", torch.float32).contiguous()
    if probs.shape != (len(ids), len(classes)):
        raise ValueError(f"probabilities of shape {tuple(probs.shape)} for {len(ids)} ids and {len(classes)} classes")
    atomic_save({"format": FORMAT, "format_version": FORMAT_VERSION, "ids": list(ids), "classes": list(classes),
                 "probs": probs, **meta}, path)
    return sha256_file(path)


def read_teacher_targets(path: str | os.PathLike[str]) -> TeacherTargets:
    """Read and check a teacher-targets file; a :class:`DataError` naming ``data.teacher_targets`` and the file
    for one that is missing, not ours, of another version, or inconsistent."""
    path = os.fspath(path)
    where = f"{FIELD}: {path}"
    if not os.path.isfile(path):
        raise DataError(f"{where} does not exist (fdrl teach writes it)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is the input's fault here
        raise DataError(f"{where}: not a readable teacher-targets file ({str(exc).strip()[:200]})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise DataError(f"{where}: not a teacher-targets file (format {got!r}, expected {FORMAT!r}; "
                        f"fdrl teach writes one)")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"{where}: format version {version!r}, this fdrl reads version {FORMAT_VERSION}; "
                        f"compute the targets again with this version's fdrl teach")
    ids, classes, probs = raw.get("ids"), raw.get("classes"), raw.get("probs")
    if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)
            and isinstance(classes, list) and all(isinstance(c, str) for c in classes)
            and isinstance(probs, torch.Tensor) and probs.dtype in (torch.float32, torch.float16)
            and tuple(probs.shape) == (len(ids), len(classes))):
        raise DataError(f"{where}: malformed: expected 'ids' (N strings), 'classes' (K strings) and 'probs' "
                        f"(an (N, K) float32 or float16 tensor)")
    probs = probs.float()
    tol = 1e-2 if raw["probs"].dtype == torch.float16 else 1e-4
    if len(ids) and (not bool(torch.isfinite(probs).all()) or bool((probs < 0).any())
                     or float((probs.sum(1) - 1).abs().max()) > tol):
        raise DataError(f"{where}: malformed: every row of 'probs' must be a probability distribution")
    meta = {k: v for k, v in raw.items() if k not in ("format", "format_version", "ids", "classes", "probs")}
    return TeacherTargets(path, sha256_file(path), ids, classes, probs, meta)


def _column_order(targets: TeacherTargets, classes: Sequence[str]) -> list[int]:
    """For each of the run's ``classes``, its column in the file (matched by name); refuses a mismatch."""
    column = {canonical_class(c): j for j, c in enumerate(targets.classes)}
    order = [column.get(canonical_class(c), -1) for c in classes]
    if len(targets.classes) != len(classes) or -1 in order or len(set(order)) != len(order):
        raise DataError(f"{FIELD}: {targets.path} holds classes {targets.classes}, this run trains "
                        f"{list(classes)}: the teachers must have the run's classes (matched by name, in any order)")
    return order


def _rows(targets: TeacherTargets, ids: Sequence[str]) -> torch.Tensor:
    """For each of ``ids``, its row in the file. An id the file holds more than once (the same id in two parts of
    ``data.extra_train``) is matched in order of occurrence, as ``fdrl teach`` wrote the split; refuses an id the
    file lacks."""
    where: dict[str, list[int]] = defaultdict(list)
    for row, i in enumerate(targets.ids):
        where[i].append(row)
    seen: Counter[str] = Counter()
    rows, missing = [], []
    for i in ids:
        k = seen[i]
        seen[i] += 1
        if k < len(where.get(i, ())):
            rows.append(where[i][k])
        else:
            missing.append(i)
    if missing:
        raise DataError(f"{FIELD}: {targets.path} has no targets for {len(missing)} of the {len(ids)} training "
                        f"samples (e.g. {missing[0]!r}); compute them for this run's training split: fdrl teach with "
                        f"the run's recipe and --set options")
    return torch.tensor(rows, dtype=torch.int64)


def blend_teacher_targets(train: TensorSet, targets: TeacherTargets, weight: float) -> TensorSet:
    """``train`` with soft targets ``weight`` x the teachers' probabilities + (1 - ``weight``) x its own targets
    (its soft targets where it has them, else the one-hot label); each sample's probabilities found by id, the
    classes by name. The hard labels stay the data set's."""
    order = _column_order(targets, train.classes)
    teacher = targets.probs[_rows(targets, train.ids)][:, order]
    own = train.targets.float() if train.targets.dim() == 2 else \
        torch.nn.functional.one_hot(train.labels, len(train.classes)).float()
    blended = weight * teacher + (1.0 - weight) * own
    return TensorSet(train.images, blended, train.labels, train.ids, train.classes, train.skipped, train.reader)


def describe(targets: TeacherTargets) -> str:
    """One line on what made the file, for a run's log."""
    m = targets.meta
    teachers = ", ".join(m.get("teacher_names") or []) or "?"
    return (f"{targets.path} (sha256 {targets.sha256[:12]}, {len(targets.ids)} samples; teachers {teachers}; "
            f"temperature {m.get('temperature')}, tta {m.get('tta')}; computed on {m.get('dataset')} "
            f"{m.get('split')!r})")
