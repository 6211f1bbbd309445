"""``opencv``: OpenCV's bundled Haar cascade (ships inside opencv-python-headless), with a detection confidence
from ``detectMultiScale3``; eyes from the bundled Haar eye cascade (also used by ``dlib``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DetectorError
from .base import Face, clip_box, downscale, plausible_eyes

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class HaarEyes:
    """Both eye centres inside a face box from OpenCV's bundled eye cascade, or None when not found."""

    def __init__(self) -> None:
        import cv2

        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")

    def __call__(self, gray: np.ndarray, box: tuple[int, int, int, int]):
        x, y, w, h = box  # clipped to the image by the detectors
        upper = gray[y:y + h // 2, x:x + w]
        if upper.size == 0 or self.cascade.empty():
            return None
        eyes = self.cascade.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=5, minSize=(max(4, w // 10),) * 2)
        if len(eyes) < 2:
            return None
        (ax, ay, aw, ah), (bx, by, bw, bh) = sorted(eyes, key=lambda e: -e[2] * e[3])[:2]
        return plausible_eyes((x + ax + aw / 2, y + ay + ah / 2), (x + bx + bw / 2, y + by + bh / 2), w, h)


class OpenCVDetector:
    """Haar cascade frontal-face detector; smallest face ``min_size`` px."""

    name = "opencv"

    def __init__(self, min_size: int = 24, scale_factor: float = 1.1, min_neighbors: int = 5,
                 align: bool = True, max_side: int = 1280) -> None:
        import cv2

        self.cv2 = cv2
        base = cv2.data.haarcascades
        self.face = cv2.CascadeClassifier(base + "haarcascade_frontalface_default.xml")
        if self.face.empty():
            raise DetectorError(f"OpenCV's Haar cascade could not be loaded from {base}")
        self.eyes = HaarEyes() if align else None
        self.min_size, self.scale_factor, self.min_neighbors = min_size, scale_factor, min_neighbors
        self.max_side = max_side

    def detect(self, image: Image.Image) -> list[Face]:
        import numpy as np

        gray = np.asarray(image.convert("L"))
        small, scale = downscale(gray, self.max_side)
        small = self.cv2.equalizeHist(small)
        boxes, _, weights = self.face.detectMultiScale3(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        faces = []
        for (x, y, w, h), wt in zip(boxes, np.asarray(weights).reshape(-1), strict=False):
            box = clip_box(x / scale, y / scale, w / scale, h / scale, gray.shape[1], gray.shape[0])
            faces.append(Face(box=box, score=float(wt), eyes=self.eyes(gray, box) if self.eyes else None))
        faces.sort(key=lambda f: (-f.box[2] * f.box[3]))
        return faces
