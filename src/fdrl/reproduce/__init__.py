"""Reproduce FDRL against its baseline twin: one command from a data root to a paired results table.

``fdrl reproduce --recipe NAME --data ROOT --out DIR --seeds 0 1 2`` (:func:`reproduce` from Python) trains the
recipe's FDRL model and its baseline twin for each seed under the recipe's protocol (select on the validation
split, test once on the test split), on a CUDA GPU (several runs side by side) or on the CPU, and writes
``results.md``, ``results.json`` and the run folders; ``--resume`` continues it. :mod:`fdrl.reproduce.transfer`
packs data and exports checkpoints for machines reached through size-limited transfers.

Everything here imports torch; the command's arguments are :mod:`fdrl.cli.reproduce`'s.
"""

from __future__ import annotations

from typing import Any

__all__ = ["reproduce"]


def __getattr__(name: str) -> Any:
    if name == "reproduce":  # lazily: `fdrl --help` builds this command's parser without importing torch
        from .suite import reproduce

        return reproduce
    raise AttributeError(f"module 'fdrl.reproduce' has no attribute {name!r}")
