"""Trunks by name: the backbone a model builds from its config's ``trunk`` field.

A trunk maps images (B, 3, H, W) to a pooled feature (B, num_features) and says its width in ``num_features``,
which sizes the heads, and the normalisation its weights expect in ``input_mean`` and ``input_std`` (class
attributes, per RGB channel of pixels in [0, 1]; a recipe that sets no ``data.preprocessing.mean``/``std`` gets
them, as timm's pretrained configs give theirs). A new trunk is a module plus one entry in :data:`TRUNKS`.
Optional parts of the contract: ``min_input_size`` (class attribute; the run config refuses smaller
``data.preprocessing.input_size``), ``stages`` (its residual stages, input side first; the pooled feature is the
global average of the last one's output), ``freeze(mode)`` (``trunk.freeze``), ``load_pretrained(source)``
(``trunk.pretrained_path``; without it a torch state dict of the trunk is loaded), and keyword options that are
fields of the model config (``stem``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import PretrainedWeightsError, unknown_name
from .dlib_resnet import PACKAGE_SOURCE, DlibResNet29Trunk
from .pretrained import load_trunk_weights
from .resnet import ResNet18Trunk

TRUNKS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": ResNet18Trunk,  # torchvision's ResNet-18 without fc, 512 features
    "dlib_resnet29": DlibResNet29Trunk,  # dlib's face-recognition ResNet, 256 features, inputs >= 103 px
}
# Model-config options a trunk may not take, with the value that means "not asked for" (accepted by every trunk).
NEUTRAL_OPTIONS: dict[str, Any] = {"stem": "imagenet"}
# trunk.pretrained_path values that name weights of one trunk rather than a file.
NAMED_WEIGHTS = {PACKAGE_SOURCE: "dlib_resnet29"}


def check_trunk_name(name: str) -> str:
    """``name`` itself when it is a registered trunk, else :class:`~fdrl.errors.UnknownNameError` listing them."""
    if name not in TRUNKS:
        raise unknown_name("trunk", name, TRUNKS)
    return name


def _accepted(builder: Callable[..., nn.Module], options: dict[str, Any], name: str) -> dict[str, Any]:
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    refused = {k: v for k, v in options.items() if k not in params and v != NEUTRAL_OPTIONS.get(k, object())}
    if refused:
        raise ValueError(f"trunk {name!r} takes no option " + ", ".join(f"{k}={v!r}" for k, v in refused.items())
                         + f" (trunk.{next(iter(refused))} applies to other trunks)")
    return {k: v for k, v in options.items() if k in params}


def check_trunk(name: str, pretrained_path: str | None = None, **options: Any) -> None:
    """Refuse, before anything is built, a trunk name, option or named weights that do not fit together."""
    _accepted(TRUNKS[check_trunk_name(name)], options, name)
    owner = NAMED_WEIGHTS.get(os.fspath(pretrained_path)) if pretrained_path is not None else None
    if owner is not None and owner != name:
        raise ValueError(f"pretrained_path={pretrained_path!r} names the weights of trunk {owner!r}, not {name!r} "
                         f"(set trunk.name={owner})")


def build_trunk(name: str, **options: Any) -> nn.Module:
    """The trunk ``name`` built with the ``options`` it takes; it has ``num_features``."""
    builder = TRUNKS[check_trunk_name(name)]
    trunk = builder(**_accepted(builder, options, name))
    if not isinstance(getattr(trunk, "num_features", None), int):
        raise TypeError(f"trunk {name!r} does not say its feature width (num_features)")
    return trunk


@dataclass(frozen=True)
class TrunkInput:
    """What a trunk expects of its input, read from its class: the run config fills a recipe's unset
    normalisation from it and refuses inputs below ``min_input_size``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_input_size: int  # the smallest side that passes its layers (1: any)


def trunk_input(name: str) -> TrunkInput:
    """The input the trunk ``name`` expects: its normalisation and smallest side."""
    cls = TRUNKS[check_trunk_name(name)]
    missing = [a for a in ("input_mean", "input_std") if not hasattr(cls, a)]
    if missing:
        raise TypeError(f"trunk {name!r} does not say its input normalisation ({', '.join(missing)})")
    return TrunkInput(tuple(cls.input_mean), tuple(cls.input_std), int(getattr(cls, "min_input_size", 1)))


def freeze_trunk(trunk: nn.Module, mode: str) -> None:
    """Apply ``trunk.freeze`` (``none`` | ``all`` | ``all_but_last``) through the trunk's own ``freeze``."""
    if mode == "none":
        return
    if not callable(getattr(trunk, "freeze", None)):
        raise ValueError(f"trunk.freeze={mode!r}: trunk {type(trunk).__name__} cannot be frozen (no freeze method)")
    trunk.freeze(mode)


def load_pretrained(trunk: nn.Module, source: str | os.PathLike[str]) -> None:
    """Load ``trunk.pretrained_path`` into ``trunk``: its own ``load_pretrained`` where it has one, else a torch
    state dict of the trunk from a local file (never a download)."""
    loader = getattr(trunk, "load_pretrained", None)
    if callable(loader):
        loader(source)
    elif os.fspath(source) in NAMED_WEIGHTS:
        raise PretrainedWeightsError(f"pretrained_path={os.fspath(source)!r} names the weights of trunk "
                                     f"{NAMED_WEIGHTS[os.fspath(source)]!r}, not of {type(trunk).__name__}")
    else:
        load_trunk_weights(trunk, source)


class _Stop(Exception):
    """Raised by the pre-hook of :func:`last_stage_input` once it holds the maps: the rest is not computed."""

    def __init__(self, maps: torch.Tensor) -> None:
        super().__init__()
        self.maps = maps


def last_stage_input(trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The feature maps entering the trunk's last stage (``trunk.stages[-1]``) for images ``x``; the last stage
    itself is not run. With :func:`from_last_stage` it splits a trunk for a last-stage-only fine-tune on cached maps."""

    def stop(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        raise _Stop(args[0])

    handle = _stages(trunk)[-1].register_forward_pre_hook(stop)
    try:
        trunk(x)
    except _Stop as done:
        return done.maps
    finally:
        handle.remove()
    raise RuntimeError(f"{type(trunk).__name__} never ran its last stage")


def from_last_stage(trunk: nn.Module, maps: torch.Tensor) -> torch.Tensor:
    """The pooled feature from maps of :func:`last_stage_input`: the last stage, then the global average (the
    pooling of every registered trunk; a test checks ``from_last_stage(last_stage_input(x)) == trunk(x)``)."""
    return _stages(trunk)[-1](maps).mean(dim=(2, 3))


def _stages(trunk: nn.Module) -> list[nn.Module]:
    stages = getattr(trunk, "stages", None)
    if not stages:
        raise ValueError(f"trunk {type(trunk).__name__} does not list its stages (stages), so it has no last stage")
    return list(stages)
