"""The models shipped inside the package: names, files and cards (torch-free, so ``fdrl --help`` can list them).

Each model is ``fdrl/weights/<file>`` with its model card; the first entry is the default of ``fdrl.Recognizer()``
and ``fdrl predict``. It sits at the bottom of the package so that training can start from a shipped model
(``train.init_from=fer2013``) as inference loads one.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

PACKAGED_MODELS: dict[str, str] = {"fer2013": "fdrl_fer2013.pt", "ferplus": "fdrl_ferplus.pt"}
DEFAULT_MODEL = next(iter(PACKAGED_MODELS))
MODEL_CARDS: dict[str, str] = {"fer2013": "MODEL_CARD.md", "ferplus": "MODEL_CARD_ferplus.md"}


def shipped_file(name: str, cards: bool = False) -> Path:
    """Where the shipped model (or, with ``cards``, its model card) called ``name`` lives; it may be absent."""
    table = MODEL_CARDS if cards else PACKAGED_MODELS
    return Path(str(resources.files("fdrl") / "weights" / table[name]))


def model_file(name: str | os.PathLike[str]) -> Path:
    """A checkpoint named by its path, or by a shipped model's name (``fer2013``) where no file of that name
    exists; the file itself may be absent (its reader says so)."""
    name = os.fspath(name)
    return shipped_file(name) if name in PACKAGED_MODELS and not Path(name).exists() else Path(name)
