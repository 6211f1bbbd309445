"""Samples and the common dataset class (decoding itself is :mod:`fdrl.media`'s).

Every loader turns its publisher's layout into a list of :class:`Sample` (id, where the pixels come from,
label index or soft target, subject) and an explicit class list. Decoding errors never escape as tracebacks
from a worker: in ``on_error="skip"`` mode the sample is counted and reported in ``dataset.skipped``; in
``"strict"`` mode a :class:`DataError` names the file and the problem.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError, ImageReadError
from ..faces import FaceCropper, check_detector_name
from ..media import IMAGE_EXTENSIONS, read_image, read_video_frame, to_rgb


@dataclass
class Sample:
    id: str  # unique within the data set (a relative path or the publisher's id)
    path: str | None = None  # image file, or None when ``pixels`` holds the image
    label: int = -1  # index into ``classes``; -1 when only ``soft`` is given
    soft: tuple[float, ...] | None = None  # vote distribution over ``classes`` (FERPlus)
    subject: str | None = None  # for subject-independent splits
    box: tuple[int, int, int, int] | None = None  # face box x, y, w, h to crop (AffectNet)
    pixels: np.ndarray | None = field(default=None, repr=False)  # HxW or HxWx3 uint8 (FER2013 csv)
    frame: int | None = None  # when set, ``path`` is a video and this is the 0-based frame to read (MMI)


class FERDataset:
    """A map-style data set: ``ds[i] -> (image, target, id)``.

    ``image`` is an RGB PIL image (or whatever ``transform`` makes of it); ``target`` the class index, or the
    soft target when the data set has one and ``soft=True``.
    """

    def __init__(self, name: str, split: str, classes: Sequence[str], samples: list[Sample],
                 transform: Callable[[Image.Image], Any] | None = None, on_error: str = "skip",
                 skipped: list[tuple[str, str]] | None = None, root: str | None = None) -> None:
        if on_error not in ("strict", "skip"):
            raise ValueError(f"on_error must be 'strict' or 'skip', got {on_error!r}")
        self.name, self.split, self.classes = name, split, list(classes)
        self.samples, self.transform, self.on_error, self.root = samples, transform, on_error, root
        self.skipped: list[tuple[str, str]] = list(skipped or [])
        self.excluded: dict[str, int] = {}  # samples left out by the label protocol (not errors), by reason
        # Detect-and-crop for sets of uncropped frames (CK+, MMI, Oulu-CASIA originals); see set_face_crop.
        self.face_crop: Callable[[Image.Image], Image.Image] | None = None
        self._check()

    def _check(self) -> None:
        k = len(self.classes)
        ids = Counter(s.id for s in self.samples)
        dup = [i for i, n in ids.items() if n > 1]
        if dup:
            raise DataError(f"{self.name}/{self.split}: duplicated sample ids, e.g. {dup[:3]}")
        for s in self.samples:
            if s.label >= k or (s.label < 0 and s.soft is None):
                raise DataError(f"{self.name}: sample {s.id}: label {s.label} out of range 0..{k - 1}")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [s.label if s.label >= 0 else int(np.argmax(s.soft)) for s in self.samples]

    @property
    def has_soft_targets(self) -> bool:
        return any(s.soft is not None for s in self.samples)

    def class_counts(self) -> dict[str, int]:
        c = Counter(self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}

    def load(self, index: int) -> Image.Image:
        """The sample's RGB image (cropped to its face box when it has one); raises ImageReadError."""
        s = self.samples[index]
        if s.pixels is not None:
            im = to_rgb(Image.fromarray(s.pixels))
        elif s.frame is not None:
            im = read_video_frame(s.path, s.frame)
        else:
            im = read_image(s.path)
        if s.box is not None:
            x, y, w, h = s.box
            if w <= 0 or h <= 0:
                raise ImageReadError(f"empty face box {s.box}")
            im = im.crop((max(0, x), max(0, y), min(im.width, x + w), min(im.height, y + h)))
        if self.face_crop is not None:
            im = self.face_crop(im)  # raises ImageReadError when no face is found: a counted skip
        return im

    def set_face_crop(self, detector: str, margin: float) -> None:
        """Crop every image to its largest detected face (``margin`` per side), as ``fdrl predict`` does."""
        self.face_crop = None if check_detector_name(detector) == "none" else FaceCropper(detector, margin)

    def target(self, index: int, soft: bool = False) -> Any:
        s = self.samples[index]
        if soft and s.soft is not None:
            return np.asarray(s.soft, dtype=np.float32)
        return s.label if s.label >= 0 else int(np.argmax(s.soft))

    def __getitem__(self, index: int) -> tuple[Any, Any, str]:
        s = self.samples[index]
        try:
            im = self.load(index)
        except ImageReadError as exc:
            raise DataError(f"{self.name}: {s.path or s.id}: {exc}") from exc
        return (self.transform(im) if self.transform else im), self.target(index), s.id

    def subset(self, indices: Sequence[int], split: str) -> FERDataset:
        sub = FERDataset(self.name, split, self.classes, [self.samples[i] for i in indices], self.transform,
                         self.on_error, self.skipped, self.root)
        sub.excluded = dict(self.excluded)  # protocol exclusions of the parent split, reported with the subset
        sub.face_crop = self.face_crop
        return sub

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items())
        text = f"{self.name}/{self.split}: {len(self)} samples ({counts})"
        if self.skipped:
            text += f"; skipped {len(self.skipped)}"
        return text


class SampleCollector:
    """Builds a sample list while counting (skip) or raising on (strict) problems."""

    def __init__(self, name: str, on_error: str) -> None:
        self.name, self.on_error = name, on_error
        self.samples: list[Sample] = []
        self.skipped: list[tuple[str, str]] = []

    def skip(self, where: str, reason: str) -> None:
        if self.on_error == "strict":
            raise DataError(f"{self.name}: {where}: {reason}")
        self.skipped.append((where, reason))

    def add_file(self, path: Path, **fields: Any) -> None:
        if not path.is_file():
            self.skip(str(path), "listed but absent")
            return
        if path.stat().st_size == 0:
            self.skip(str(path), "zero-byte file")
            return
        self.samples.append(Sample(path=str(path), **fields))


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what}: expected a folder at {path}, which does not exist")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{what}: expected the file {path}, which does not exist")
    return path


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
