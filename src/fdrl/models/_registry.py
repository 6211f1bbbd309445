"""One registry of model names -> (config class, builder)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import unknown_name


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_cls: type
    build: Callable[[Any], nn.Module]
    description: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type, description: str) -> Callable:
    def wrap(build: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, config_cls, build, description)
        return build

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise unknown_name("model", name, list_models())
    return _MODELS[name]


def make_config(name: str, **overrides: Any) -> Any:
    """The model's config with ``overrides`` applied; ``None`` values keep the default (CLI-friendly)."""
    entry = get_entry(name)
    fields = {f.name for f in dataclasses.fields(entry.config_cls)}
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - fields)
    if unknown:
        hints = {k: difflib.get_close_matches(k, fields, n=2) for k in unknown}
        raise TypeError(f"{name}: unknown config field(s) {hints} (valid: {sorted(fields)})")
    return entry.config_cls(**given)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; e.g. ``create_model("fdrl_resnet18", num_classes=7, delta=0.3)``."""
    return build_from_config(name, make_config(name, **overrides))


def build_from_config(name: str, config: Any) -> nn.Module:
    model = get_entry(name).build(config)
    model.model_name = name  # type: ignore[assignment]
    return model
