"""Samples, the common dataset class and robust image decoding.

Every loader turns its publisher's layout into a list of :class:`Sample` (id, where the pixels come from,
label index or soft target, subject) and an explicit class list. Decoding errors never escape as tracebacks
from a worker: in ``on_error="skip"`` mode the sample is counted and reported in ``dataset.skipped``; in
``"strict"`` mode a :class:`DataError` names the file and the problem.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import DataError, ImageReadError
from ..faces import FaceCropper, check_detector_name

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# The raster formats decoded (PIL's names): those of IMAGE_EXTENSIONS (PPM covers .pgm) plus GIF; JPEG's opener
# also reads a phone's multi-picture JPEG (MPO). Any other plugin is refused before it parses the file: EPS would
# run Ghostscript on it, and an ICO or ICNS header can hide a PNG far larger than the pixel limit checks.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
# Refuse decompression bombs (default PIL limit is ~89 Mpx and only warns below 2x that).
Image.MAX_IMAGE_PIXELS = 100_000_000
ImageFile.LOAD_TRUNCATED_IMAGES = False


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


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image as RGB with EXIF orientation applied; raise :class:`ImageReadError` with a reason."""
    path = os.fspath(path)
    with image_read_errors(), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if os.path.getsize(path) == 0:
            raise ImageReadError("zero-byte file")
        with open_image(path) as im:
            im.load()
            return to_rgb(ImageOps.exif_transpose(im))


def open_image(source: str | os.PathLike[str] | IO[bytes]) -> Image.Image:
    """``Image.open`` limited to :data:`IMAGE_FORMATS`; a file of another format is refused by name."""
    try:
        return Image.open(source, formats=IMAGE_FORMATS)
    except UnidentifiedImageError as exc:  # its message names the path or a BytesIO object, not the format
        found = _sniff_format(source)
        if found is None:
            reason = "format not recognised"
        elif found in IMAGE_FORMATS:  # its signature, but a header the plugin could not parse
            reason = f"a damaged {found} file"
        else:
            reason = f"format {found} is not accepted; accepted: {', '.join(IMAGE_FORMATS)}"
        raise ImageReadError(f"not a readable image ({reason})") from exc


def _sniff_format(source: str | os.PathLike[str] | IO[bytes]) -> str | None:
    """The PIL format whose signature test accepts the file's first bytes, without opening it with that plugin."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fh:
            prefix = fh.read(16)
    else:
        source.seek(0)
        prefix = source.read(16)
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # noqa: BLE001 - a plugin's signature test choking on 16 bytes: not that format
            continue
    return None


@contextmanager
def image_read_errors() -> Iterator[None]:
    """Any failure to decode an image -> :class:`ImageReadError` with the reason. PIL's plugins raise more than
    OSError on malformed files (a corrupted TIFF: TypeError from ``load``), so everything is caught; decompression
    bombs keep their own message."""
    try:
        yield
    except ImageReadError:
        raise
    except FileNotFoundError as exc:
        raise ImageReadError("file not found") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"image too large (decompression-bomb limit): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - TypeError, struct.error, IndexError, ... share no base class
        raise ImageReadError(f"not a readable image ({type(exc).__name__}: {exc})") from exc


def _full_scale(mode: str, hi: float) -> float:
    """The value that means white in a high-bit-depth image: 65535 for 16-bit modes (a dark 16-bit photo stays
    dark: the scale is the format's, not the image's maximum); 32-bit integers by the smallest of 255 / 65535 that
    holds the data (PIL's mode ``I`` carries either), else their own maximum; floats 1.0 when within 0-1, else 255."""
    if mode.startswith("I;16"):
        return 65535.0
    if mode == "F":
        return 1.0 if hi <= 1.0 else 255.0
    return 255.0 if hi <= 255 else 65535.0 if hi <= 65535 else float(hi)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode (palette, alpha, CMYK, 16-bit, 32-bit integer or float, grayscale) -> 8-bit RGB."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = float(np.nanmax(arr)) if arr.size and not np.isnan(arr).all() else 0.0
        arr = np.nan_to_num(arr, nan=0.0) * (255.0 / _full_scale(im.mode, hi))
        im = Image.fromarray(np.rint(arr).clip(0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


@contextmanager
def _open_video(path: str | os.PathLike[str]):
    """An opened ``cv2.VideoCapture``, released afterwards; ImageReadError when it cannot be opened."""
    import cv2

    cap = cv2.VideoCapture(os.fspath(path))
    try:
        if not cap.isOpened():
            raise ImageReadError("not a readable video")
        yield cap
    finally:
        cap.release()


def video_frame_count(path: str | os.PathLike[str]) -> int:
    """Frames in a video, by its header, or by reading it through when the header has no count."""
    import cv2

    with _open_video(path) as cap:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            n = 0
            while cap.grab():
                n += 1
        return n


def read_video_frame(path: str | os.PathLike[str], index: int) -> Image.Image:
    """Frame ``index`` (0-based) of a video as RGB; read sequentially, since seeking is inexact for many codecs."""
    import cv2

    with _open_video(path) as cap:
        for i in range(index):
            if not cap.grab():
                raise ImageReadError(f"video ends after {i} frames; frame {index} was asked for")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise ImageReadError(f"video frame {index} cannot be decoded")
        return Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


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
