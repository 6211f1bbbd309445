"""Export a checkpoint to ONNX (with its preprocessing as metadata) or TorchScript.

The exported graph takes a normalised face batch (B, 3, S, S) and returns ``logits`` (B, K) and ``alpha``
(B, M; M = 0 for the baseline), so a runtime without fdrl can still reproduce predictions exactly when it
applies the stored preprocessing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..errors import CheckpointError


class ExportWrapper(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images)
        alpha = out.alpha if out.alpha is not None else images.new_zeros(images.shape[0], 0)
        return out.logits, alpha


def _metadata(loaded) -> dict[str, str]:
    return {
        "fdrl_format": "1",
        "model_name": loaded.raw["model_name"],
        "classes": json.dumps(loaded.classes),
        "preprocessing": json.dumps(dataclasses.asdict(loaded.preprocessing)),
        "model_config": json.dumps(loaded.raw["model_config"]),
    }


def export_onnx(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], dynamic_batch: bool = True,
                opset: int = 17) -> dict[str, Any]:
    import onnx

    loaded = load_checkpoint(checkpoint)
    wrapper = ExportWrapper(loaded.model.float().eval())
    size = loaded.preprocessing.input_size
    dummy = torch.randn(2, 3, size, size)
    kwargs: dict[str, Any] = {}
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"images": {0: "batch"}, "logits": {0: "batch"}, "alpha": {0: "batch"}}
    torch.onnx.export(wrapper, (dummy,), os.fspath(out), input_names=["images"], output_names=["logits", "alpha"],
                      opset_version=opset, dynamo=False, **kwargs)
    model = onnx.load(os.fspath(out))
    meta = _metadata(loaded)
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, os.fspath(out))
    return meta


def read_onnx_metadata(session) -> dict[str, Any]:
    meta = session.get_modelmeta().custom_metadata_map
    if "fdrl_format" not in meta:
        raise CheckpointError("this ONNX file was not exported by fdrl (no preprocessing metadata)")
    prep = json.loads(meta["preprocessing"])
    if meta.get("face_detector"):  # files exported before the detector joined the preprocessing record
        prep["face_detector"] = meta["face_detector"]
    return {"classes": json.loads(meta["classes"]), "preprocessing": prep, "model_name": meta["model_name"]}


def export_torchscript(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, str]:
    loaded = load_checkpoint(checkpoint)
    size = loaded.preprocessing.input_size
    traced = torch.jit.trace(ExportWrapper(loaded.model.float().eval()), torch.randn(2, 3, size, size))
    meta = _metadata(loaded)
    torch.jit.save(traced, os.fspath(out), _extra_files={"fdrl_meta.json": json.dumps(meta)})
    return meta
