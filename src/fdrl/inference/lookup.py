"""The shipped models as files: their paths in this installation and the one-line descriptions ``fdrl models``
prints (the names and defaults themselves are :mod:`fdrl.inference.packaged`'s, torch-free)."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import CheckpointError, read_checkpoint
from ..shipped import shipped_file
from .packaged import DEFAULT_MODEL, PACKAGED_MODELS


def packaged_checkpoint(name: str = DEFAULT_MODEL) -> Path:
    """The packaged model called ``name``; a clear error for an unknown name or an install without it."""
    if name not in PACKAGED_MODELS:
        raise CheckpointError(f"unknown packaged model {name!r} (available: {', '.join(PACKAGED_MODELS)})")
    path = shipped_file(name)
    if not path.is_file():
        raise CheckpointError(f"packaged model {name!r} ({PACKAGED_MODELS[name]}) is not in this installation; "
                              "pass --checkpoint/checkpoint= an fdrl .pt or exported .onnx file")
    return path


def describe_packaged(name: str) -> str:
    """One line on a shipped model for ``fdrl models``: classes, trunk and input, the data it was trained and
    selected on with its validation accuracy at that epoch (as trained, fp32), and where its model card is."""
    raw = read_checkpoint(packaged_checkpoint(name))
    data = (raw.get("config") or {}).get("data", {})
    acc = (raw.get("metrics") or {}).get("val_accuracy")
    card = shipped_file(name, cards=True)
    trained = f"trained on {data.get('dataset', '?')} {data.get('train_split', '?')}, " if data else ""
    val = f"{data.get('val_split', 'val')} accuracy {100 * acc:.2f} % at epoch {raw.get('epoch')}; " if acc else ""
    return (f"{len(raw['classes'])} classes ({', '.join(raw['classes'])}); {raw['model_name']} on "
            f"{raw['model_config'].get('trunk', 'resnet18')} at {raw['preprocessing']['input_size']} px; {trained}"
            f"{val}card {card}")


def default_checkpoint() -> Path:
    """The default packaged model."""
    return packaged_checkpoint(DEFAULT_MODEL)
