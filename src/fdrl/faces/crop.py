"""The face crop shared by training data and inference: a square around the detector's box, eye-levelled."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import ImageReadError
from .base import DEFAULT_MARGIN, Face
from .registry import create_detector

if TYPE_CHECKING:
    from PIL import Image


class FaceCropper:
    """The largest face of an image, cropped and eye-aligned as at inference; for data sets of uncropped frames.

    When no upright face is found, the frame turned a quarter either way is tried too: some sequence archives
    (e.g. parts of MMI) store camera-rotated video, and the crop then comes out upright.
    """

    def __init__(self, detector: str, margin: float = DEFAULT_MARGIN, try_rotations: bool = True) -> None:
        self.detector, self.margin, self.try_rotations = create_detector(detector), margin, try_rotations
        found_by = getattr(self.detector, "key", detector)
        self.key = f"{found_by}:{margin}:{'rot' if try_rotations else 'upright'}"  # part of the cache fingerprint

    def __call__(self, image: Image.Image) -> Image.Image:
        from PIL import Image

        turns = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270) if self.try_rotations else (None,)
        for turn in turns:
            view = image.transpose(turn) if turn is not None else image
            faces = self.detector.detect(view)
            if faces:
                return crop_face(view, faces[0], self.margin)
        raise ImageReadError(f"no face found by the {self.detector.name} detector")


def crop_face(image: Image.Image, face: Face, margin: float) -> Image.Image:
    """Square crop around the face box enlarged by ``margin`` per side, rotated so the eyes are level."""
    from PIL import Image

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
