"""Loading trunk weights from an explicit local file (never a download).

Accepted formats:
- a torchvision ImageNet ResNet-18 state dict (``resnet18-f37072fd.pth``);
- the MS-Celeb-1M ResNet-18 of the FER community (``resnet18_msceleb.pth``, released with SCN): weights under a
  ``state_dict`` key, possibly with ``module.`` prefixes and an extra ``fc`` of another class count.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import PretrainedWeightsError


def _unwrap(obj: object, path: str) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return inner
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise PretrainedWeightsError(
        f"{path}: expected a ResNet-18 state dict (a mapping of tensors, possibly under 'state_dict'), "
        f"got {type(obj).__name__}"
    )


def filter_trunk_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.``/``backbone.``/``trunk.`` prefixes and drop the classifier (``fc.*``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "backbone.", "trunk."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("fc."):
            continue
        out[key] = value
    return out


def load_trunk_weights(trunk: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load ``path`` into ``trunk`` strictly; raise with the missing/unexpected keys on mismatch."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PretrainedWeightsError(f"pretrained_path {path!r} does not exist (weights are never downloaded)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error becomes a clear message
        raise PretrainedWeightsError(f"{path}: cannot be read as a weights-only torch file ({exc})") from exc
    state = filter_trunk_state_dict(_unwrap(obj, path))
    expected = trunk.state_dict()
    # Old checkpoints (torch < 0.4, such as some MS-Celeb copies) lack BN's num_batches_tracked: fill it.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise PretrainedWeightsError(
            f"{path}: not a state dict of this trunk ({type(trunk).__name__}).\n"
            f"  missing keys ({len(missing)}): {missing[:10]}{' ...' if len(missing) > 10 else ''}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}\n"
            f"  wrong shapes ({len(wrong_shape)}): {wrong_shape[:5]}"
        )
    trunk.load_state_dict(state, strict=True)
