"""``dlib``: dlib's HOG frontal-face detector (built into dlib, no model file; ``pip install dlib-bin`` or
``dlib``); more robust to lighting than Haar; eyes from the Haar eye cascade."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DetectorError
from .base import Face, clip_box, downscale
from .opencv import HaarEyes

if TYPE_CHECKING:
    from PIL import Image


class DlibDetector:
    """dlib's HOG + linear SVM frontal-face detector (no model file); ``upsample`` finds faces down to ~40 px."""

    name = "dlib"

    def __init__(self, upsample: int = 1, threshold: float = 0.0, align: bool = True, max_side: int = 1280) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise DetectorError("detector 'dlib' needs dlib: pip install dlib-bin (or dlib)") from exc
        self.detector = dlib.get_frontal_face_detector()
        self.upsample, self.threshold, self.max_side = upsample, threshold, max_side
        self.eyes = HaarEyes() if align else None

    def detect(self, image: Image.Image) -> list[Face]:
        import numpy as np

        rgb = np.asarray(image.convert("RGB"))
        small, scale = downscale(rgb, self.max_side)
        rects, scores, _ = self.detector.run(np.ascontiguousarray(small), self.upsample, self.threshold)
        gray = np.asarray(image.convert("L")) if self.eyes else None
        faces = []
        for r, sc in zip(rects, scores, strict=True):
            box = clip_box(r.left() / scale, r.top() / scale, r.width() / scale, r.height() / scale,
                            rgb.shape[1], rgb.shape[0])
            if box[2] > 0 and box[3] > 0:
                faces.append(Face(box=box, score=float(sc), eyes=self.eyes(gray, box) if self.eyes else None))
        faces.sort(key=lambda f: (-f.box[2] * f.box[3]))
        return faces
