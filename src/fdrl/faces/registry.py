"""Face detectors by name: the one table behind every ``--detector`` option and ``data.preprocessing.face_detector``.

A new backend is one module with a class that has ``name`` and ``detect(image) -> list[Face]``, plus one entry
here. The backends' own packages (OpenCV, dlib, facenet-pytorch, torch) load when a detector is built, so
listing the names costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UnknownDetectorError, unknown_name
from .base import Detector
from .dlib_hog import DlibDetector
from .facenet import MTCNNDetector
from .mtcnn_lite import TURN_ANGLE, MTCNNLiteDetector
from .opencv import OpenCVDetector
from .whole import NoDetector

# name -> builder(device); the order is the order of ``--detector`` choices.
DETECTORS: dict[str, Callable[[str], Detector]] = {
    "opencv": lambda device: OpenCVDetector(),
    "dlib": lambda device: DlibDetector(),
    "mtcnn": lambda device: MTCNNDetector(device=device),
    "mtcnn_lite": lambda device: MTCNNLiteDetector(),
    "mtcnn_lite_tilted": lambda device: MTCNNLiteDetector(turn_angle=TURN_ANGLE),
    "none": lambda device: NoDetector(),
}
# For photos when the checkpoint names none (fdrl predict, fdrl serve, Recognizer). mtcnn_lite: recall 96.7 / 98.3 %
# vs Haar's 65.8 % on benchmarks/detectors.py's pasted faces, no false face on its portraits, and the shipped
# FER2013 model scores at least as well on its crops as on Haar's (docs/detectors.md).
DEFAULT_DETECTOR = "mtcnn_lite"


def check_detector_name(name: str) -> str:
    """``name`` itself when it is a registered detector, else :class:`UnknownDetectorError` listing them."""
    if name not in DETECTORS:
        raise unknown_name("detector", name, DETECTORS, UnknownDetectorError)
    return name


def create_detector(name: str, device: str = "cpu") -> Detector:
    """A face detector by name (see the module docstring); optional backends import their package here."""
    return DETECTORS[check_detector_name(name)](device)
