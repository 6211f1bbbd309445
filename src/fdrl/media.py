"""Image and video decoding, shared by the data sets, ``fdrl predict`` and ``fdrl serve``: checked formats, a pixel
limit against decompression bombs, EXIF orientation, and errors that name the problem (:class:`ImageReadError`)
instead of a decoder's traceback."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageReadError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# The raster formats decoded (PIL's names): those of IMAGE_EXTENSIONS (PPM covers .pgm) plus GIF; JPEG's opener
# also reads a phone's multi-picture JPEG (MPO). Any other plugin is refused before it parses the file: EPS would
# run Ghostscript on it, and an ICO or ICNS header can hide a PNG far larger than the pixel limit checks.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
# Refuse decompression bombs (default PIL limit is ~89 Mpx and only warns below 2x that).
Image.MAX_IMAGE_PIXELS = 100_000_000
ImageFile.LOAD_TRUNCATED_IMAGES = False


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
