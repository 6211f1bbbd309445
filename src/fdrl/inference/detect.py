"""Moved to :mod:`fdrl.faces` (below both ``data/`` and ``inference/``); kept so old imports keep working."""

from ..faces import (  # noqa: F401
    DEFAULT_DETECTOR,
    DETECTORS,
    DetectorError,
    Face,
    FaceCropper,
    create_detector,
    crop_face,
)
