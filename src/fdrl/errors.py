"""The exceptions that mean "the user's input is wrong" (shown as one line by the CLI, no traceback)."""

from __future__ import annotations


class DataError(ValueError):
    """A data set on disk that is missing, malformed or does not match its publisher's layout."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .engine.trainer import TrainingError, TrainingStopped
    from .inference.detect import DetectorError
    from .models.pretrained import PretrainedWeightsError

    return (DataError, ConfigError, CheckpointError, PretrainedWeightsError, TrainingError, TrainingStopped,
            DetectorError, FileNotFoundError, KeyError)


def __getattr__(name: str):
    if name == "USER_ERRORS":
        return _user_errors()
    raise AttributeError(name)
