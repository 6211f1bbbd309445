"""One checkpoint format for resume, evaluation and inference.

A checkpoint is a plain dict of tensors and Python primitives, loaded with ``torch.load(weights_only=True)``:
no pickled code. It carries the model name and config (to rebuild the network), the criterion state (centres),
optimiser/scheduler state, epoch, the resolved training config, class names, preprocessing and metrics; the
trainer adds the best validation accuracy, the history, the git commit and the fp16 GradScaler state (the loss
scale; empty without fp16). Writes are atomic (temp file + rename), so a kill mid-write never leaves a corrupt
file.

It holds no RNG state, and ``--resume`` is still exact: a run resumes at an epoch boundary, and after model
initialisation training draws only from generators seeded by (seed, epoch, rank): batch order, augmentation and
mixing (see :mod:`fdrl.engine.trainer`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError

FORMAT = "fdrl-checkpoint"
FORMAT_VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions() -> dict[str, str | None]:
    """The torch and CUDA versions a checkpoint or run summary records."""
    return {"torch": str(torch.__version__), "cuda": torch.version.cuda}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def make_checkpoint(
    model: nn.Module,
    classes: list[str],
    preprocessing: Any,
    criterion: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    epoch: int = 0,
    config: Any = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> dict[str, Any]:
    """Assemble the checkpoint dict; ``half=True`` stores floating weights as fp16 (shipping)."""
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": model.model_name,
        "model_config": _plain(model.config),
        "model_state": state,
        "classes": list(classes),
        "preprocessing": _plain(preprocessing),
        "epoch": int(epoch),
        "config": _plain(config) if config is not None else None,
        "metrics": _plain(metrics or {}),
        "versions": versions(),
    }
    if criterion is not None:
        ckpt["criterion_state"] = {k: v.detach().cpu() for k, v in criterion.state_dict().items()}
    if optimizer is not None:
        ckpt["optimizer_state"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler_state"] = scheduler.state_dict()
    if extra:
        ckpt.update(_plain(extra))
    return ckpt


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint dict (weights-only)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        msg = str(exc)
        if "Unsupported global" in msg:
            raise CheckpointError(
                f"{path}: refused: the file contains pickled Python objects/code, which fdrl never loads "
                f"(torch.load weights_only=True). Re-save it as a plain state dict."
            ) from exc
        raise CheckpointError(f"{path}: not a readable torch checkpoint (corrupt or truncated?): {msg[:300]}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an fdrl checkpoint (no 'format': '{FORMAT}' entry)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {ckpt['format_version']} is newer than this fdrl reads")
    return ckpt


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    classes: list[str]
    preprocessing: Any  # fdrl.config.Preprocessing
    raw: dict[str, Any]
    criterion: nn.Module | None = None

    @property
    def config(self) -> dict[str, Any] | None:
        return self.raw.get("config")

    @property
    def face_detector(self) -> str | None:
        """The detector whose crops the model was trained on; None: it was trained on pre-cropped faces."""
        name = self.preprocessing.face_detector
        return None if name == "none" else name

    def __repr__(self) -> str:
        """A summary a person can read: the generated one printed every weight and the optimiser state
        (~900 k characters). Non-scalar metrics (confusion matrices, per-class lists) are left out."""
        metrics = {k: round(v, 4) if isinstance(v, float) else v for k, v in (self.raw.get("metrics") or {}).items()
                   if isinstance(v, int | float | str) and not isinstance(v, bool)}
        return (f"LoadedCheckpoint(model={self.raw.get('model_name', type(self.model).__name__)!r}, "
                f"classes={list(self.classes)}, preprocessing={self.preprocessing!r}, "
                f"epoch={self.raw.get('epoch')}, metrics={metrics})")


def preprocessing_record(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's preprocessing; files written before the detector joined it kept it in the training
    config (``data.face_detector``), which then still says which detector made the training crops."""
    prep = dict(ckpt["preprocessing"])
    old = ((ckpt.get("config") or {}).get("data") or {}).get("face_detector")
    if old is not None:
        prep["face_detector"] = old
    return prep


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """Rebuild the model from its saved name and config and load its weights strictly."""
    from .models import build_from_config, get_entry

    try:
        entry = get_entry(ckpt["model_name"])
        config = entry.config_cls(**{**ckpt["model_config"], "pretrained_path": None})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: cannot rebuild the model from its saved config: {exc}") from exc
    model = build_from_config(ckpt["model_name"], config)
    state = ckpt["model_state"]
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(
            f"{source}: weights do not match architecture {ckpt['model_name']!r}: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, wrong shape {sorted(bad)[:8]}"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                    with_criterion: bool = False) -> LoadedCheckpoint:
    """Rebuild model (and optionally criterion) from the file alone; the model is in eval mode."""
    from .config import Preprocessing

    ckpt = read_checkpoint(path, map_location)
    model = model_from_checkpoint(ckpt, os.fspath(path)).eval()
    criterion = None
    if with_criterion and "criterion_state" in ckpt:
        criterion = criterion_from_checkpoint(ckpt, model)
    return LoadedCheckpoint(
        model=model,
        classes=list(ckpt["classes"]),
        preprocessing=Preprocessing(**preprocessing_record(ckpt)),
        raw=ckpt,
        criterion=criterion,
    )


def criterion_from_checkpoint(ckpt: dict[str, Any], model: nn.Module) -> nn.Module:
    from .config import TrainConfig, from_dict
    from .losses import create_criterion

    loss_cfg = from_dict(TrainConfig, ckpt["config"]).loss if ckpt.get("config") else None
    criterion = create_criterion(model, loss_cfg)
    criterion.load_state_dict(ckpt["criterion_state"])
    return criterion


def slim_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str], half: bool = True) -> dict[str, Any]:
    """An inference-only copy of ``src``: model weights (fp16 when ``half``), classes, preprocessing, config,
    metrics; no optimiser/scheduler state. Used to ship the packaged model."""
    ck = read_checkpoint(src)
    state = ck["model_state"]
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    keep = ("format", "format_version", "model_name", "model_config", "classes", "preprocessing", "epoch", "config",
            "metrics", "versions", "git_commit", "history", "best_val_accuracy")
    slim = {k: ck[k] for k in keep if k in ck}
    slim["model_state"] = state
    if "criterion_state" in ck:
        slim["criterion_state"] = ck["criterion_state"]
    atomic_save(slim, dst)
    return slim
