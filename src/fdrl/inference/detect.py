"""Face detection and crop/alignment, offline.

``opencv``: OpenCV's bundled Haar cascade (ships inside opencv-python-headless, no download), with a detection
confidence from ``detectMultiScale3`` and eye-based rotation alignment when both eyes are found.
``none``: the whole image is one face (already-cropped inputs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h in the original image
    score: float  # detector confidence (Haar: level weight; "none": 1.0)
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # left, right eye centres (image coords)


class NoDetector:
    name = "none"

    def detect(self, image: Image.Image) -> list[Face]:
        return [Face(box=(0, 0, image.width, image.height), score=1.0)]


class OpenCVDetector:
    """Haar cascade frontal-face detector; smallest face ``min_size`` px."""

    name = "opencv"

    def __init__(self, min_size: int = 24, scale_factor: float = 1.1, min_neighbors: int = 5,
                 align: bool = True, max_side: int = 1280) -> None:
        import cv2

        self.cv2 = cv2
        base = cv2.data.haarcascades
        self.face = cv2.CascadeClassifier(base + "haarcascade_frontalface_default.xml")
        self.eye = cv2.CascadeClassifier(base + "haarcascade_eye.xml")
        if self.face.empty():
            raise RuntimeError(f"OpenCV's Haar cascade could not be loaded from {base}")
        self.min_size, self.scale_factor, self.min_neighbors = min_size, scale_factor, min_neighbors
        self.align, self.max_side = align, max_side

    def detect(self, image: Image.Image) -> list[Face]:
        cv2 = self.cv2
        gray = np.asarray(image.convert("L"))
        scale = min(1.0, self.max_side / max(gray.shape))  # detect on a downscaled copy of huge photos
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        small = cv2.equalizeHist(small)
        boxes, _, weights = self.face.detectMultiScale3(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        faces = []
        for (x, y, w, h), wt in zip(boxes, np.asarray(weights).reshape(-1), strict=False):
            box = tuple(int(round(v / scale)) for v in (x, y, w, h))
            faces.append(Face(box=box, score=float(wt), eyes=self._eyes(gray, box) if self.align else None))
        faces.sort(key=lambda f: (-f.box[2] * f.box[3]))
        return faces

    def _eyes(self, gray: np.ndarray, box: tuple[int, int, int, int]):
        x, y, w, h = box
        upper = gray[y:y + h // 2, x:x + w]
        if upper.size == 0:
            return None
        eyes = self.eye.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=5, minSize=(max(4, w // 10),) * 2)
        if len(eyes) < 2:
            return None
        eyes = sorted(eyes, key=lambda e: -e[2] * e[3])[:2]
        centres = sorted(((x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in eyes), key=lambda c: c[0])
        (lx, ly), (rx, ry) = centres
        if rx - lx < w * 0.2 or abs(ry - ly) > h * 0.25:  # implausible pair: skip alignment
            return None
        return (lx, ly), (rx, ry)


def create_detector(name: str):
    if name == "none":
        return NoDetector()
    if name == "opencv":
        return OpenCVDetector()
    raise ValueError(f"unknown detector {name!r} (available: opencv, none)")


def crop_face(image: Image.Image, face: Face, margin: float) -> Image.Image:
    """Square crop around the face box enlarged by ``margin`` per side, rotated so the eyes are level."""
    x, y, w, h = face.box
    cx, cy = x + w / 2, y + h / 2
    side = max(w, h) * (1 + 2 * margin)
    if face.eyes is not None:
        (lx, ly), (rx, ry) = face.eyes
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
        if abs(angle) > 1.0:
            image = image.rotate(angle, resample=Image.BILINEAR, center=(cx, cy))
    box = (int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(cx + side / 2)), int(round(cy + side / 2)))
    return image.crop(box)  # PIL pads out-of-image areas with black
