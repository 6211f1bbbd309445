"""The runtimes a model file can run on, behind one call: an fdrl checkpoint (PyTorch), an ONNX export
(onnxruntime) or a TorchScript export. Each exposes ``classes``, ``prep`` (the preprocessing the model was trained
with) and ``fixed_batch``, and maps a normalised face batch to logits and alpha."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import CheckpointError, load_checkpoint
from ..config import Preprocessing
from ..errors import first_line
from .formats import format_of


class TorchBackend:
    fixed_batch: int | None = None  # an fdrl checkpoint takes any batch size

    def __init__(self, path: str | os.PathLike[str], device: str) -> None:
        loaded = load_checkpoint(path, map_location="cpu")
        self.device = torch.device(device)
        self.model = loaded.model.to(self.device).eval()
        self.classes, self.prep = loaded.classes, loaded.preprocessing

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.model(x.to(self.device))
        return out.logits.float().cpu().numpy(), None if out.alpha is None else out.alpha.float().cpu().numpy()


class OnnxBackend:
    def __init__(self, path: str | os.PathLike[str], device: str = "cpu") -> None:  # onnxruntime: CPU
        import onnxruntime as ort

        from .export import read_onnx_metadata

        self.path = os.fspath(path)
        try:  # onnxruntime's errors derive from Exception only; one line naming the file instead of a traceback
            self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - InvalidProtobuf, NoSuchFile, Fail, ... share no base class
            raise CheckpointError(f"{self.path}: not a readable ONNX model "
                                  f"(expected a file written by `fdrl export --format onnx`): "
                                  f"{first_line(exc)}") from exc
        meta = read_onnx_metadata(self.session)
        self.classes, self.prep = meta["classes"], Preprocessing(**meta["preprocessing"])
        self.fixed_batch = meta["fixed_batch"]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            res = self.session.run(None, {"images": x.numpy().astype(np.float32)})
        except Exception as exc:  # noqa: BLE001 - InvalidArgument (shape, type) and Fail have no common base
            expected = self.session.get_inputs()[0].shape
            raise CheckpointError(f"{self.path}: the ONNX model expects input 'images' of shape {expected} "
                                  f"(float32), got {list(x.shape)}: {first_line(exc)}") from exc
        alpha = res[1] if len(res) > 1 and res[1].shape[-1] > 0 else None
        return res[0], alpha


class TorchScriptBackend:
    """A module written by ``fdrl export --format torchscript``. TorchScript runs the code stored in the file
    (not pickled Python, but still code): load only files you exported or trust."""

    def __init__(self, path: str | os.PathLike[str], device: str) -> None:
        from .export import TORCHSCRIPT_META, parse_metadata

        extra = {TORCHSCRIPT_META: ""}
        self.device = torch.device(device)
        try:
            self.module = torch.jit.load(os.fspath(path), map_location=self.device, _extra_files=extra).eval()
            meta = parse_metadata(json.loads(extra[TORCHSCRIPT_META] or "{}"), "TorchScript")
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a usable fdrl TorchScript export: {str(exc)[:300]}") from exc
        self.classes, self.prep = meta["classes"], Preprocessing(**meta["preprocessing"])
        self.fixed_batch = meta["fixed_batch"]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        logits, alpha = self.module(x.to(self.device))
        return logits.float().cpu().numpy(), alpha.float().cpu().numpy() if alpha.shape[-1] > 0 else None


def open_backend(path: Path, device: str = "cpu") -> TorchBackend | OnnxBackend | TorchScriptBackend:
    """The runtime for a model file, by its format (:func:`fdrl.inference.formats.format_of`). Each exposes
    ``classes``, ``prep`` (with the training detector) and ``fixed_batch``."""
    return format_of(path).load("backend")(path, device)
