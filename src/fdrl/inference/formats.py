"""Model file formats: the one table that the exporter, the model loader and the CLI's ``--format`` choices read.

A new format is one entry here plus the function that writes it and the backend class that runs it (named as
``module:attribute`` inside :mod:`fdrl.inference`, imported only when used: this table is torch-free, so
``fdrl --help`` lists the formats without loading torch).
"""

from __future__ import annotations

import importlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelFormat:
    name: str
    suffix: str  # what an exported file is called; the loader also tells the formats apart by content
    backend: str  # ``module:Class`` in fdrl.inference that runs it
    exporter: str | None  # ``module:function`` in fdrl.inference that writes it from a checkpoint; None: native
    about: str

    def load(self, which: str) -> Any:
        module, _, attr = getattr(self, which).partition(":")
        return getattr(importlib.import_module(f"fdrl.inference.{module}"), attr)


FORMATS: dict[str, ModelFormat] = {
    "checkpoint": ModelFormat("checkpoint", ".pt", "backends:TorchBackend", None,
                              "an fdrl checkpoint (PyTorch; the training output)"),
    "onnx": ModelFormat("onnx", ".onnx", "backends:OnnxBackend", "export:export_onnx",
                        "ONNX with the preprocessing as metadata, run by onnxruntime"),
    "torchscript": ModelFormat("torchscript", ".pt", "backends:TorchScriptBackend", "export:export_torchscript",
                               "a traced TorchScript module with the preprocessing in the archive"),
}
EXPORT_FORMATS: tuple[str, ...] = tuple(name for name, f in FORMATS.items() if f.exporter)  # fdrl export --format


def is_torchscript(path: Path) -> bool:
    """TorchScript archives hold ``<name>/code/``; fdrl checkpoints (also zip files) do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.split("/")[1:2] == ["code"] for n in zf.namelist())


def format_of(path: Path) -> ModelFormat:
    """The format of a model file: ``.onnx`` by name, a TorchScript archive by content, else an fdrl checkpoint."""
    if path.suffix.lower() == FORMATS["onnx"].suffix:
        return FORMATS["onnx"]
    if path.is_file() and is_torchscript(path):
        return FORMATS["torchscript"]
    return FORMATS["checkpoint"]


def export_model(checkpoint: str | Path, out: str | Path, fmt: str, fixed_batch: int | None = None) -> dict:
    """Write ``checkpoint`` as ``fmt`` (one of :data:`EXPORT_FORMATS`) to ``out``; returns the stored metadata."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {list(EXPORT_FORMATS)}, got {fmt!r}")
    return FORMATS[fmt].load("exporter")(checkpoint, out, fixed_batch=fixed_batch)
