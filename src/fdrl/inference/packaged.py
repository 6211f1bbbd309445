"""Facts about the models shipped inside the package; torch-free, so the CLI's ``--help`` can list them.

Each model is ``fdrl/weights/<file>`` with its model card ``fdrl/weights/<file stem>.md``; the first entry is
the default of ``fdrl.Recognizer()`` and ``fdrl predict``.
"""

from __future__ import annotations

import typing

from ..literals import TtaMode

PACKAGED_MODELS: dict[str, str] = {"fer2013": "fdrl_fer2013.pt", "ferplus": "fdrl_ferplus.pt"}
DEFAULT_MODEL = next(iter(PACKAGED_MODELS))
MODEL_CARDS: dict[str, str] = {"fer2013": "MODEL_CARD.md", "ferplus": "MODEL_CARD_ferplus.md"}

TTA_MODES: tuple[str, ...] = typing.get_args(TtaMode)
# From the measured gain and cost on the FER2013 validation split (docs/results.md, "Test-time augmentation").
DEFAULT_TTA = "flip"
