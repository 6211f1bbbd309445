"""``Literal``-typed dataclass fields checked by one rule, wherever a config is built.

Model, loss and optimiser configs are built directly (``create_model(..., alpha_reduce="mean")``) as well as
from YAML, so they call :func:`check_literal_fields` after construction; :func:`fdrl.config.from_dict` calls
:func:`check_choice` with the full dotted key, so a YAML typo names ``train.amp`` rather than ``amp``.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Literal

# Choice sets named in more than one layer (a config field and the code that acts on it); each lives here once.
TtaMode = Literal["none", "flip", "tencrop"]  # test-time augmentation: config, Recognizer, CLI
MixMode = Literal["none", "mixup", "cutmix"]  # batch mixing: config, data/mix.py
TTA_MODES: tuple[str, ...] = typing.get_args(TtaMode)  # the same, as the CLI's choices and error texts list them


def literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` annotation; None for any other type."""
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def check_choice(tp: Any, value: Any, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` when ``value`` is not one of the ``Literal`` type's values."""
    choices = literal_choices(tp)
    if choices is not None and value not in choices:
        raise ValueError(f"{where} must be one of {list(choices)}, got {value!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_literal_fields(obj: Any) -> None:
    """Check every ``Literal`` field of dataclass instance ``obj`` (call it from ``__post_init__``)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        check_choice(hints[f.name], getattr(obj, f.name), f.name)
