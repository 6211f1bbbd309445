"""Every error that means "the input is wrong": one :class:`FdrlError` base, which the CLI shows as one line.

This module is the bottom of the package and imports nothing from it, so any module can raise these. Each class
also derives from the built-in exception callers caught before it existed (``ValueError``, ``RuntimeError``,
``KeyError``), so ``except ValueError`` around a data loader keeps working. Anything that is *not* an
``FdrlError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class FdrlError(Exception):
    """Base of every user-facing error: bad files, configs, names, checkpoints, runs that cannot go on."""


class UnknownNameError(FdrlError, KeyError):
    """A name missing from a registry (model, trunk, detector, data set); a ``KeyError`` for callers' habits."""

    def __str__(self) -> str:  # KeyError quotes its message; a user-facing one reads as plain text
        return str(self.args[0]) if self.args else ""


def unknown_name(kind: str, name: str, known: Iterable[str],
                 error: type[UnknownNameError] = UnknownNameError) -> UnknownNameError:
    """The error for a name missing from a registry: the closest names, then every registered one."""
    import difflib  # here: the CLI imports this module at start-up

    known = list(known)
    close = difflib.get_close_matches(name, known, n=3)
    return error(f"unknown {kind} {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                 + f" (available: {', '.join(known)})")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of a library's message, cut short: the detail without its C++ stack."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


class ConfigError(FdrlError, ValueError):
    """A config key or value that does not exist or does not fit."""


class UnknownRecipeError(ConfigError, UnknownNameError):
    """A recipe name that is not shipped in the package (``fdrl recipes`` lists them)."""


class DataError(FdrlError, ValueError):
    """A data set on disk that is missing, malformed or does not match its publisher's layout."""


class UnknownDatasetError(DataError, UnknownNameError):
    """A data set name that is not registered."""


class InputError(FdrlError, ValueError):
    """An argument to the Python API whose type, shape or value range does not fit the call."""


class DeviceError(ConfigError, InputError):
    """A device this machine lacks (``cuda`` on a CPU-only torch, ``cuda:3`` beside one GPU) or a name torch does
    not know; both a config error (``train.device``) and an API argument error (``Recognizer(device=...)``)."""


class ImageReadError(FdrlError):
    """An image (or video frame) that cannot be decoded, or holds no face; the message is the reason."""


class DetectorError(FdrlError, ValueError):
    """A face detector that cannot be built (its optional package is missing)."""


class UnknownDetectorError(DetectorError, UnknownNameError):
    """A face detector name that is not in :data:`fdrl.faces.DETECTORS`."""


class CheckpointError(FdrlError, RuntimeError):
    """A checkpoint that cannot be read, is not ours, or does not match its own architecture."""


class PretrainedWeightsError(FdrlError, ValueError):
    """A pretrained file that cannot be read or does not match the trunk."""


class TrainingError(FdrlError, RuntimeError):
    """The run cannot continue (non-finite loss, leaking splits, ...)."""


class TrainingStopped(FdrlError, RuntimeError):
    """Raised by ``train.stop_after_steps``: the run stops as if killed, after its last epoch checkpoint."""
