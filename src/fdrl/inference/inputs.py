"""What ``Recognizer.predict`` accepts, turned into (id, image) pairs: paths and folders (walked), PIL images and
numpy arrays; types and shapes are checked before any image is processed, and an image that cannot be used becomes
its error in its place, so one bad input never costs the others' results."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageReadError, InputError
from ..media import IMAGE_EXTENSIONS, image_read_errors, read_image, to_rgb


def check_array(arr: np.ndarray) -> None:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.dtype != np.uint8:
        raise InputError(f"numpy input must be HxWx3 (or HxWx4, or HxW) uint8, got shape {arr.shape} {arr.dtype}")


def array_image(arr: np.ndarray, bgr: bool) -> Image.Image:
    """A checked HxW, HxWx3 or HxWx4 uint8 array (``bgr``: OpenCV's channel order) as an RGB image."""
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    arr = arr[..., :3]
    return Image.fromarray(np.ascontiguousarray(arr[..., ::-1] if bgr else arr))


def in_memory(convert: Callable[[], Image.Image]) -> Image.Image | ImageReadError:
    """An in-memory input as RGB, or the reason it cannot be used (an empty image; a lazily opened file that
    fails to decode now) in its place, so one bad item does not stop the others."""
    try:
        with image_read_errors():
            image = convert()
            if image.width == 0 or image.height == 0:
                raise ImageReadError(f"empty image ({image.width}x{image.height} pixels)")
            return image
    except ImageReadError as exc:
        return exc


def iter_image_paths(inputs: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files as given; folders walked recursively (sorted) for image extensions."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    yield f
        else:
            yield p


def photo_inputs(inputs: Any, bgr: bool = False) -> Iterator[tuple[str, Image.Image | Exception]]:
    """Each item of ``inputs`` (or ``inputs`` itself) dispatched on its type: a path or folder (walked), a PIL
    image (id ``image<i>``) or a numpy array (id ``array<i>``), ``i`` its place in the list. Types and array
    shapes are checked before any image is processed; a bad image becomes an exception in its place."""
    single = isinstance(inputs, Image.Image | np.ndarray | str | os.PathLike)
    items = [inputs] if single else list(inputs)
    for item in items:
        if isinstance(item, np.ndarray):
            check_array(item)
        elif not isinstance(item, Image.Image | str | os.PathLike):
            raise InputError(f"predict() takes paths, folders, PIL images and HxWx3 uint8 numpy arrays (or a "
                             f"list of them), got {type(item).__name__}")
    for i, item in enumerate(items):
        if isinstance(item, Image.Image):
            yield f"image{i}", in_memory(lambda item=item: to_rgb(item))
        elif isinstance(item, np.ndarray):
            yield f"array{i}", in_memory(lambda item=item: array_image(item, bgr))
        else:
            for p in iter_image_paths([item]):
                try:
                    yield str(p), read_image(p)
                except ImageReadError as exc:
                    yield str(p), exc
