"""Inference facts about the shipped models (torch-free, so the CLI's ``--help`` can list them); their names and
files are :mod:`fdrl.shipped`'s."""

from __future__ import annotations

import typing

from ..literals import TtaMode
from ..shipped import DEFAULT_MODEL, MODEL_CARDS, PACKAGED_MODELS

__all__ = ["DEFAULT_MODEL", "DEFAULT_TTA", "MODEL_CARDS", "PACKAGED_MODELS", "TTA_MODES"]


TTA_MODES: tuple[str, ...] = typing.get_args(TtaMode)
# From the measured gain and cost on the FER2013 validation split (docs/results.md, "Test-time augmentation").
DEFAULT_TTA = "flip"
