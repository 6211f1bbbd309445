"""Inference facts about the shipped models (torch-free, so the CLI's ``--help`` can list them); their names and
files are :mod:`fdrl.shipped`'s."""

from __future__ import annotations

from ..literals import TTA_MODES
from ..shipped import DEFAULT_MODEL, MODEL_CARDS, PACKAGED_MODELS

__all__ = ["DEFAULT_MODEL", "DEFAULT_TTA", "MODEL_CARDS", "PACKAGED_MODELS", "TTA_MODES", "WHOLE_IMAGE_MAX_SIDE"]

# From the measured gain and cost on the FER2013 validation split (docs/results.md, "Test-time augmentation").
DEFAULT_TTA = "flip"
# An image at most this many pixels on its longer side in which the detector finds no face is taken for a face
# crop (FER2013's 48 px faces, SFEW's aligned movie faces, a cropped selfie: the face fills the frame and the
# detector misses its outline or half of it) and classified whole, with status "whole_image" and score 0.
WHOLE_IMAGE_MAX_SIDE = 256
