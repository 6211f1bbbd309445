"""Export a checkpoint to ONNX (with its preprocessing as metadata) or TorchScript.

The exported graph takes a normalised face batch (B, 3, S, S) and returns ``logits`` (B, K) and ``alpha``
(B, M; M = 0 for the baseline), so a runtime without fdrl can still reproduce predictions exactly when it
applies the stored preprocessing. B is dynamic unless ``fixed_batch`` is given (some runtimes and accelerators
want static shapes); ``fdrl.Recognizer`` then feeds such a model in chunks of exactly that size.
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


_EXAMPLE_BATCH = 2  # the example batch traced when the batch is dynamic (any size other than 1 works)


def _example(loaded, fixed_batch: int | None) -> torch.Tensor:
    if fixed_batch is not None and fixed_batch < 1:
        raise ValueError(f"fixed_batch must be a positive number of faces, got {fixed_batch}")
    size = loaded.preprocessing.input_size
    return torch.randn(fixed_batch or _EXAMPLE_BATCH, 3, size, size)


def _metadata(loaded) -> dict[str, str]:
    return {
        "fdrl_format": "1",
        "model_name": loaded.raw["model_name"],
        "classes": json.dumps(loaded.classes),
        "preprocessing": json.dumps(dataclasses.asdict(loaded.preprocessing)),
        "model_config": json.dumps(loaded.raw["model_config"]),
    }


def export_onnx(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], fixed_batch: int | None = None,
                opset: int = 17) -> dict[str, Any]:
    """``fixed_batch=None``: the batch axis is dynamic; an int: the graph takes exactly that many faces."""
    import onnx

    loaded = load_checkpoint(checkpoint)
    wrapper = ExportWrapper(loaded.model.float().eval())
    dummy = _example(loaded, fixed_batch)
    kwargs: dict[str, Any] = {}
    if fixed_batch is None:
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


def parse_metadata(meta: dict[str, str], kind: str = "ONNX") -> dict[str, Any]:
    """The stored strings of ``_metadata`` back as values; ``fixed_batch`` is None for a dynamic batch."""
    if "fdrl_format" not in meta:
        raise CheckpointError(f"this {kind} file was not exported by fdrl (no preprocessing metadata)")
    prep = json.loads(meta["preprocessing"])
    if meta.get("face_detector"):  # files exported before the detector joined the preprocessing record
        prep["face_detector"] = meta["face_detector"]
    return {"classes": json.loads(meta["classes"]), "preprocessing": prep, "model_name": meta["model_name"],
            "fixed_batch": int(meta["fixed_batch"]) if meta.get("fixed_batch") else None}


def read_onnx_metadata(session) -> dict[str, Any]:
    """Metadata of an ONNX session; the batch size comes from the graph's input shape, which is what binds."""
    meta = parse_metadata(session.get_modelmeta().custom_metadata_map)
    batch = session.get_inputs()[0].shape[0]
    meta["fixed_batch"] = batch if isinstance(batch, int) and batch > 0 else None
    return meta


TORCHSCRIPT_META = "fdrl_meta.json"


def export_torchscript(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str],
                       fixed_batch: int | None = None) -> dict[str, str]:
    """A traced module; with ``fixed_batch`` the example batch has that size and the metadata records it (a
    traced graph carries no input signature), so the predictor keeps to it."""
    loaded = load_checkpoint(checkpoint)
    traced = torch.jit.trace(ExportWrapper(loaded.model.float().eval()), _example(loaded, fixed_batch))
    meta = _metadata(loaded) | {"fixed_batch": str(fixed_batch or "")}
    torch.jit.save(traced, os.fspath(out), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})
    return meta
