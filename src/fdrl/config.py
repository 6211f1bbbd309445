"""Typed run configuration: dataclass defaults <- YAML file <- ``--set key=value`` overrides.

The resolved config is written to the run folder and into every checkpoint, so a checkpoint alone rebuilds
the model, its preprocessing and the recipe that trained it.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError, UnknownDetectorError
from .faces import DEFAULT_MARGIN, check_detector_name
from .literals import MixMode, TtaMode, check_choice
from .losses import LossConfig
from .optim import OptimConfig, SchedConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocessing:
    """How a face crop becomes a model input; stored in checkpoints and ONNX metadata."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    grayscale: bool = False  # convert to gray and replicate to 3 channels (FER2013-style sources)
    face_margin: float = DEFAULT_MARGIN  # detector box enlarged by this fraction per side before cropping
    # Detect and crop the largest face of every image (face_margin per side) before resizing: for data sets of
    # uncropped frames (CK+ cohn-kanade-images, MMI videos, Oulu-CASIA OriginalImg); frames without a face are
    # counted skips. A name in fdrl.faces.DETECTORS; "none": the images are face crops already. `fdrl predict`
    # and `fdrl eval` reuse the checkpoint's.
    face_detector: str = "none"
    # The resolution of the training faces when it is below input_size (FER2013: 48 px upsampled for a trunk
    # that needs 112): every larger crop is first resized to source_size, so a sharp photo reaches the model as
    # blurred as the faces it learnt from. None: resize straight to input_size.
    source_size: int | None = None

    def __post_init__(self) -> None:
        if self.input_size < 32:
            raise ConfigError(f"input_size must be >= 32 px, got {self.input_size}")
        if not -0.5 < self.face_margin:  # a negative margin shrinks the box; at -0.5 nothing is left
            raise ConfigError(f"face_margin must be > -0.5 (a fraction of the box per side), got {self.face_margin}")
        if self.source_size is not None and not 8 <= self.source_size <= self.input_size:
            raise ConfigError(f"source_size must lie between 8 px and input_size ({self.input_size}), "
                              f"got {self.source_size}")
        try:
            check_detector_name(self.face_detector)
        except UnknownDetectorError as exc:
            raise ConfigError(f"face_detector: {exc}") from None
        self.mean, self.std = tuple(self.mean), tuple(self.std)  # type: ignore[assignment]


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # dataset-specific keyword arguments
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    val_fraction: float = 0.1  # carved, seeded and stratified, from train where a benchmark has no val split
    augment: Literal["none", "basic", "fer", "extended"] = "basic"
    cache: bool = True  # decode once into a memory-mapped uint8 file per split (docs/scale.md)
    cache_dir: str | None = None  # None: ~/.cache/fdrl
    decode_workers: int | None = None  # processes for the first decode; None: every available core
    max_samples: int | None = None  # per split, for smoke runs
    on_error: Literal["strict", "skip"] = "skip"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        if self.decode_workers is not None and self.decode_workers < 1:
            raise ConfigError(f"decode_workers must be >= 1 (or null: every core), got {self.decode_workers}")


@dataclass
class TrainSection:
    epochs: int = 40
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["auto", "none", "bf16", "fp16"] = "none"  # auto: bf16 on AMX CPUs and bf16 GPUs (engine/runtime.py)
    channels_last: bool = False
    compile: bool = False
    # Fine-tune from an fdrl checkpoint (spec §5.10, e.g. SFEW from RAF-DB): a file, or the name of a model shipped
    # in the package (fer2013, ferplus). init_parts=trunk copies only the trunk, so that FDRL and its baseline
    # twin can start from the same trunk with fresh heads.
    init_from: str | None = None
    init_parts: Literal["all", "trunk"] = "all"
    select: Literal["last", "val"] = "val"  # which checkpoint is "the" result; both are always written
    tta: TtaMode = "none"  # reported beside the plain figure, never instead
    mix: MixMode = "none"  # batch mixing (data/mix.py); targets become soft
    mix_alpha: float = 1.0  # Beta(alpha, alpha) of the mixing weight
    max_steps_per_epoch: int | None = None  # for smoke tests
    stop_after_steps: int | None = None  # simulate a kill after N optimiser steps (tests of --resume)
    num_threads: int | None = None
    log_every: int = 20


@dataclass
class ReportConfig:
    tsne: bool = True
    tsne_max_samples: int = 2000
    plots: bool = True


@dataclass
class TrainConfig:
    model_name: str = "fdrl_resnet18"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the model's own config
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSection = field(default_factory=TrainSection)
    report: ReportConfig = field(default_factory=ReportConfig)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """YAML reads ``1e-4`` (no dot) as a string: turn numeric strings into the field's number type."""
    args = typing.get_args(tp)
    numeric = [t for t in (args or (tp,)) if t in (float, int)]
    if isinstance(value, str) and numeric:
        try:
            return float(value) if float in numeric else int(value)
        except ValueError:
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool) and float in numeric and int not in numeric:
        return float(value)
    return value


# Keys that moved to a sub-section, so older YAML files and the configs inside older checkpoints still load:
# (section class, old key) -> the sub-section that holds it now.
_MOVED_KEYS = {(DataConfig, "face_detector"): "preprocessing"}


def _move_old_keys(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    for (owner, key), section in _MOVED_KEYS.items():
        if owner is cls and key in data:
            data[section] = {**(data.get(section) or {}), key: data.pop(key)}
    return data


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from nested dicts, rejecting unknown keys (with the closest valid ones) and values
    outside a field's ``Literal`` choices (naming the full key)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    data = _move_old_keys(cls, data)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
            raise ConfigError(f"unknown config key {full!r}" + (f"; did you mean {close}?" if close else "")
                              + f" (valid under {path or 'top level'}: {names})")
        tp = hints[key]
        try:
            check_choice(tp, value, full)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        kwargs[key] = from_dict(tp, value, full) if _is_dataclass_type(tp) else _coerce(tp, value, full)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML/torch-safe dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(text)
    return raw


def _check_model_overrides(cfg: TrainConfig) -> None:
    """The model overrides build a config, and the input size suits its trunk."""
    from .models import make_config
    from .models.trunks import trunk_min_input_size

    try:
        model = make_config(cfg.model_name, **cfg.model)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from exc
    size, least = cfg.data.preprocessing.input_size, trunk_min_input_size(model.trunk)
    if size < least:
        raise ConfigError(f"data.preprocessing.input_size={size} is below the minimum of trunk {model.trunk!r} "
                          f"({least} px; smaller inputs cannot pass its layers): set data.preprocessing.input_size "
                          f"to at least {least} (e.g. 112; the loader resizes the faces)")


_REPLACED_WHOLE = {"model"}  # model overrides belong to one architecture: a child config replaces them


def _deep_merge(base: dict[str, Any], over: dict[str, Any], top: bool = True) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        merge = isinstance(v, dict) and isinstance(out.get(k), dict) and not (top and k in _REPLACED_WHOLE)
        out[k] = _deep_merge(out[k], v, top=False) if merge else v
    return out


def read_yaml_config(path: str | Path, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A YAML config as a dict; ``inherit: other.yaml`` (relative to the file) is merged underneath."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    if str(p.resolve()) in _seen:
        raise ConfigError(f"{p}: inherit cycle")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a YAML mapping at the top level")
    parent = loaded.pop("inherit", None)
    if parent:
        loaded = _deep_merge(read_yaml_config(p.parent / parent, (*_seen, str(p.resolve()))), loaded)
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> TrainConfig:
    """Resolve defaults <- YAML ``path`` (or ``base``) <- ``overrides``."""
    raw: dict[str, Any] = dict(base or {})
    if path is not None:
        raw = _deep_merge(raw, read_yaml_config(path))
    apply_overrides(raw, overrides or [])
    cfg = from_dict(TrainConfig, raw)
    _check_model_overrides(cfg)
    return cfg


def dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
