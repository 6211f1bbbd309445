"""Model registry: ``create_model(name, **overrides)`` and ``list_models()``."""

from __future__ import annotations

from ._registry import build_from_config, create_model, get_entry, list_models, make_config, register_model
from .fdrl import FDRL, BaselineConfig, BaselineResNet18, FDRLConfig, ModelOutput, TrunkChoice
from .pretrained import PretrainedWeightsError, load_trunk_weights
from .resnet import ResNet18Trunk
from .trunks import TRUNKS, build_trunk, load_pretrained


# The model contract: every registered model keeps its trunk (from ``build_trunk(config.trunk)``) in
# ``.backbone``, returns a ModelOutput and has ``forward_head(pooled feature)``; pretrained loading, parameter
# groups, the feature cache and the CLI read ``.backbone``. The names keep "resnet18" for the default trunk:
# ``trunk`` picks another (e.g. dlib_resnet29; ``trunk.name`` in a run config), recorded in the checkpoint's model
# config.
def _with_weights(model, config):
    if config.pretrained_path:
        load_pretrained(model.backbone, config.pretrained_path)
    return model


@register_model("fdrl_resnet18", FDRLConfig, "FDRL (CVPR 2021) on a ResNet-18 trunk (trunk.name: another), "
                "12.07 M parameters at K=7")
def _fdrl_resnet18(config: FDRLConfig) -> FDRL:
    return _with_weights(FDRL(config), config)


# The baseline twin of any recipe (``fdrl train --baseline``): the same trunk with one linear layer on its feature.
BASELINE_MODEL = "baseline_resnet18"


@register_model(BASELINE_MODEL, BaselineConfig, "the paper's baseline: ResNet-18 (trunk.name: another) + GAP + "
                "Linear(512->K)")
def _baseline_resnet18(config: BaselineConfig) -> BaselineResNet18:
    return _with_weights(BaselineResNet18(config), config)


__all__ = [
    "BASELINE_MODEL",
    "FDRL",
    "BaselineConfig",
    "BaselineResNet18",
    "FDRLConfig",
    "ModelOutput",
    "PretrainedWeightsError",
    "ResNet18Trunk",
    "TRUNKS",
    "TrunkChoice",
    "build_trunk",
    "build_from_config",
    "create_model",
    "get_entry",
    "list_models",
    "load_trunk_weights",
    "make_config",
]
