"""What every detector backend shares: the face record, the detector protocol and the geometry of boxes and eyes.

numpy, PIL and OpenCV are imported where they are used: the CLI reads the detector names for its options and must
answer ``fdrl --help`` without loading them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

DEFAULT_MARGIN = 0.2  # detector box enlarged by this fraction per side before cropping (Preprocessing.face_margin)


class Face(NamedTuple):
    """One detected face (a plain record: cheap to import, immutable)."""

    box: tuple[int, int, int, int]  # x, y, w, h in the original image
    score: float  # detector confidence (Haar: level weight; "none": 1.0)
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # left, right eye centres (image coords)


class Detector(Protocol):
    name: str

    def detect(self, image: Image.Image) -> list[Face]:
        """Faces of ``image``, largest first."""
        ...


def plausible_eyes(left: tuple[float, float], right: tuple[float, float], w: float, h: float):
    """The eye pair ordered left to right in the image, or None when it cannot be a pair of eyes."""
    (lx, ly), (rx, ry) = sorted((tuple(map(float, left)), tuple(map(float, right))))
    if rx - lx < w * 0.2 or abs(ry - ly) > h * 0.25:
        return None
    return (lx, ly), (rx, ry)


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def cascade_faces(boxes: np.ndarray, probs: np.ndarray, points: np.ndarray, threshold: float, align: bool,
                   width: int, height: int) -> list[Face]:
    """MTCNN's outputs in the photo's pixels (``x0, y0, x1, y1`` boxes, probabilities, five landmarks, eyes first)
    -> the faces at or above ``threshold``, clipped to the ``width`` x ``height`` photo, largest first."""
    faces = []
    for (x0, y0, x1, y1), p, pts in zip(boxes, probs, points, strict=True):
        box = clip_box(x0, y0, x1 - x0, y1 - y0, width, height)
        if p < threshold or box[2] <= 0 or box[3] <= 0:
            continue
        eyes = plausible_eyes(pts[0], pts[1], box[2], box[3]) if align else None
        faces.append(Face(box=box, score=float(p), eyes=eyes))
    faces.sort(key=lambda f: (-f.box[2] * f.box[3]))
    return faces


def downscale(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Detect on a downscaled copy of huge photos; returns the copy and its scale."""
    import cv2

    scale = min(1.0, max_side / max(pixels.shape[:2]))
    if scale >= 1:
        return pixels, 1.0
    # An explicit size of at least 1 px a side: fx/fy alone round a 3000x1 strip's height to 0 (cv2.error).
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), scale
