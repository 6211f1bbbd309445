"""Trunks by name: the backbone a model builds from its config's ``trunk`` field.

A trunk maps images (B, 3, H, W) to a pooled feature (B, num_features) and says its width in ``num_features``,
which sizes the heads. A new trunk is a module plus one entry in :data:`TRUNKS`; builders take keyword options
(fields of the model config) so a trunk can grow switches without the models changing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import unknown_name
from .resnet import ResNet18Trunk

TRUNKS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": ResNet18Trunk,  # torchvision's ResNet-18 without fc, 512 features
}


def check_trunk_name(name: str) -> str:
    """``name`` itself when it is a registered trunk, else :class:`~fdrl.errors.UnknownNameError` listing them."""
    if name not in TRUNKS:
        raise unknown_name("trunk", name, TRUNKS)
    return name


def build_trunk(name: str, **options: Any) -> nn.Module:
    """The trunk ``name`` built with ``options``; it has ``num_features``."""
    try:
        trunk = TRUNKS[check_trunk_name(name)](**options)
    except TypeError as exc:
        if not options:
            raise
        raise ValueError(f"trunk {name!r} does not take the option(s) {sorted(options)}: {exc}") from None
    if not isinstance(getattr(trunk, "num_features", None), int):
        raise TypeError(f"trunk {name!r} does not say its feature width (num_features)")
    return trunk
