"""Typed run configuration: dataclass defaults <- recipe (a packaged one or a YAML file) <- ``--set key=value``.

The resolved config is written to the run folder and into every checkpoint, so a checkpoint alone rebuilds
the model, its preprocessing and the recipe that trained it. What the recipe leaves to its trunk (the input
normalisation) is filled in here, so the numbers are in the resolved config, never only implied by a name.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError, UnknownDetectorError
from .faces import DEFAULT_MARGIN, check_detector_name
from .literals import MixMode, TtaMode, check_choice
from .losses import LossConfig
from .models import BASELINE_MODEL, TRUNKS, TrunkChoice, make_config
from .models.freezing import FreezeMode
from .models.resnet import IMAGENET_MEAN, IMAGENET_STD, StemMode
from .models.trunks import trunk_input
from .optim import OptimConfig, SchedConfig
from .recipes import recipe_layers


@dataclass
class Preprocessing:
    """How a face crop becomes a model input; stored in checkpoints and ONNX metadata."""

    input_size: int = 224
    # Per RGB channel of pixels in [0, 1]. Left unset in a recipe, load_config() takes the trunk's own
    # (fdrl.models.trunks.trunk_input); a Preprocessing built by hand gets the default trunk's (ImageNet's).
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
    # The seed of carved splits (train/holdout, folds); None: train.seed. Fix it to vary the training seed on one
    # cut, e.g. when fine-tuning a model trained on that cut, whose holdout is the only part it never saw.
    split_seed: int | None = None
    augment: Literal["none", "basic", "fer", "extended", "photo"] = "basic"  # data.preprocess.AUGMENT_PRESETS
    cache: bool = True  # decode once into a memory-mapped uint8 file per split (docs/scale.md)
    cache_dir: str | None = None  # None: ~/.cache/fdrl
    decode_workers: int | None = None  # processes for the first decode; None: every available core
    max_samples: int | None = None  # per split, for smoke runs
    on_error: Literal["strict", "skip"] = "skip"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    # More labelled data appended to the training split only (validation and test stay this data set's): entries
    # {dataset: NAME, root: PATH, split: SPLIT (train), options: {...}}; their classes are matched to this data
    # set's by name, and their samples of other classes or in the val/test splits are dropped (docs/training.md).
    extra_train: list[dict[str, Any]] = field(default_factory=list)
    # Distillation: a file of teacher probabilities on this run's training split (`fdrl teach`); each training
    # target becomes loss.distill_weight x the teachers' + the rest x the label's (docs/training.md).
    teacher_targets: str | None = None

    def __post_init__(self) -> None:
        if self.decode_workers is not None and self.decode_workers < 1:
            raise ConfigError(f"decode_workers must be >= 1 (or null: every core), got {self.decode_workers}")
        self.extra_train = check_extra_train(self.extra_train)


EXTRA_TRAIN_KEYS = ("dataset", "root", "split", "options")


def check_extra_train(entries: Any) -> list[dict[str, Any]]:
    """``data.extra_train`` with every entry complete (``split`` defaults to ``train``, ``options`` to ``{}``);
    a :class:`ConfigError` naming ``data.extra_train[i].<field>`` for a malformed one. Whether the data set exists,
    needs a root and may be trained on is :mod:`fdrl.data.loading`'s check (the registry is a layer above)."""
    example = "{dataset: NAME, root: PATH, split: train, options: {}}"
    if entries is None:
        return []
    if not isinstance(entries, list | tuple):
        raise ConfigError(f"data.extra_train: expected a list of entries {example}, got {entries!r}")
    out = []
    for i, entry in enumerate(entries):
        where = f"data.extra_train[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping {example}, got {entry!r}")
        for key in entry:
            if key not in EXTRA_TRAIN_KEYS:
                close = difflib.get_close_matches(str(key), EXTRA_TRAIN_KEYS, n=1, cutoff=0.5)
                raise ConfigError(f"{where}.{key}: unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
                                  + f" (valid: {list(EXTRA_TRAIN_KEYS)})")
        name, root = entry.get("dataset"), entry.get("root")
        split, options = entry.get("split", "train"), entry.get("options")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.dataset: required, the name of a registered data set (fdrl data list), "
                              f"got {name!r}")
        if root is not None and not isinstance(root, str | os.PathLike):
            raise ConfigError(f"{where}.root: expected a path, got {root!r}")
        if not isinstance(split, str) or not split:
            raise ConfigError(f"{where}.split: expected a split name such as 'train', got {split!r}")
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"{where}.options: expected a mapping of the data set's options, got {options!r}")
        out.append({"dataset": name, "root": None if root is None else os.fspath(root), "split": split,
                    "options": dict(options or {})})
    return out


@dataclass
class TrainSection:
    epochs: int = 40
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["auto", "none", "bf16", "fp16"] = "none"  # auto: bf16 on AMX CPUs and bf16 GPUs (fdrl/runtime.py)
    channels_last: bool = False
    compile: bool = False
    # Fine-tune from an fdrl checkpoint (spec §5.10, e.g. SFEW from RAF-DB): a file, or the name of a model shipped
    # in the package (fer2013, ferplus). init_parts=trunk copies only the trunk, so that FDRL and its baseline
    # twin can start from the same trunk with fresh heads; matching keeps every layer whose shape still fits.
    init_from: str | None = None
    init_parts: Literal["all", "trunk", "matching"] = "all"
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


# Model-config fields of the trunk, as the trunk section names them; before the section existed they were keys of
# ``model`` (older YAML files and the configs inside older checkpoints), and they are still read from there.
_TRUNK_KEYS = {"trunk": "name", "pretrained_path": "pretrained_path", "stem": "stem", "freeze": "freeze"}


@dataclass
class TrunkConfig:
    """The trunk under the head, a section of its own so that switching ``model_name`` (``--baseline``) keeps it:
    a recipe's FDRL and its baseline twin differ in the head alone. Fields and defaults: fdrl.models.TrunkChoice."""

    name: str = TrunkChoice.trunk  # a name in fdrl.models.trunks.TRUNKS: resnet18 | dlib_resnet29
    pretrained_path: str | None = TrunkChoice.pretrained_path  # a local file, or "dlib"; never downloaded
    stem: StemMode = TrunkChoice.stem  # resnet18 only; "small" keeps resolution for 48 px faces
    freeze: FreezeMode = TrunkChoice.freeze  # none | all | all_but_last

    def __post_init__(self) -> None:
        try:  # refuses a name, option or named weights that do not fit together
            TrunkChoice(**self.model_fields())
        except KeyError as exc:  # an unknown trunk name: a value error of this section
            raise ValueError(str(exc)) from None

    def model_fields(self) -> dict[str, Any]:
        """The section as fields of the model config (where ``name`` is called ``trunk``)."""
        return {key: getattr(self, attr) for key, attr in _TRUNK_KEYS.items()}


@dataclass
class TrainConfig:
    model_name: str = "fdrl_resnet18"  # or baseline_resnet18 (--baseline): one linear layer on the same trunk
    model: dict[str, Any] = field(default_factory=dict)  # options of the model's head (its config's other fields)
    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSection = field(default_factory=TrainSection)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        if self.loss.distill_weight != LossConfig.distill_weight and not self.data.teacher_targets:
            raise ConfigError(f"loss.distill_weight={self.loss.distill_weight} blends teacher targets into the "
                              f"labels, and this run has none: set data.teacher_targets (a file of fdrl teach)")
        moved = sorted(set(self.model) & set(_TRUNK_KEYS))
        if moved:
            raise ConfigError(f"model: {moved} belong to the trunk section (trunk.{_TRUNK_KEYS[moved[0]]}); "
                              "from_dict() and load_config() move them there from older configs")

    def model_options(self) -> dict[str, Any]:
        """The keyword arguments of ``create_model(self.model_name, ...)``: the trunk and the head's options."""
        return {**self.trunk.model_fields(), **self.model}

    @property
    def split_seed(self) -> int:
        """The seed that carves ``train/holdout`` and folds: ``data.split_seed``, else ``train.seed``."""
        return self.train.seed if self.data.split_seed is None else self.data.split_seed


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
    return _lift_trunk_keys(data) if cls is TrainConfig else data


def _lift_trunk_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """``model.trunk``, ``model.stem``, ... (an older file, checkpoint or ``--set``) moved to the trunk section,
    where they override what it says."""
    model, trunk = raw.get("model"), raw.get("trunk", {})
    if not isinstance(model, dict) or not isinstance(trunk, dict) or not set(model) & set(_TRUNK_KEYS):
        return raw
    lifted = {_TRUNK_KEYS[k]: v for k, v in model.items() if k in _TRUNK_KEYS}
    return {**raw, "model": {k: v for k, v in model.items() if k not in _TRUNK_KEYS}, "trunk": {**trunk, **lifted}}


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
        text = str(exc)  # a message that already names its full key (data.extra_train[0].root) keeps it
        raise ConfigError(text if path and text.startswith(f"{path}.") else f"{path or 'config'}: {text}") from exc


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


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    return key.strip(), _parse_value(text)


def _set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section")
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        _set_key(raw, *_parse_override(item))
    return raw


def _check_model(cfg: TrainConfig) -> None:
    """The model options build a config, and the input size suits the trunk."""
    try:
        make_config(cfg.model_name, **cfg.model_options())
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from exc
    size, least = cfg.data.preprocessing.input_size, trunk_input(cfg.trunk.name).min_input_size
    if size < least:
        raise ConfigError(f"data.preprocessing.input_size={size} is below the minimum of trunk {cfg.trunk.name!r} "
                          f"({least} px; smaller inputs cannot pass its layers): set data.preprocessing.input_size "
                          f"to at least {least} (e.g. 112; the loader resizes the faces)")


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _switch_model(raw: dict[str, Any], name: Any) -> dict[str, Any]:
    """``model_name`` set to another model: the head options belong to the old one and go; the trunk stays."""
    if name == raw.get("model_name", TrainConfig.model_name):
        return raw
    return {**{k: v for k, v in raw.items() if k != "model"}, "model_name": name}


def _merge_layer(raw: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """A recipe layer over what is below it: sections merge key by key, except that a layer naming another model
    starts that model's options afresh (so a child recipe or ``--baseline`` never inherits FDRL's head options)."""
    layer = _lift_trunk_keys(layer)
    if "model_name" in layer:
        raw = _switch_model(raw, layer["model_name"])
    return _deep_merge(raw, layer)


def _fill_trunk_input(raw: dict[str, Any]) -> dict[str, Any]:
    """The trunk's own normalisation where no layer set one (or set it to null)."""
    trunk, data = raw.get("trunk", {}), raw.get("data", {})
    prep = data.get("preprocessing", {}) if isinstance(data, dict) else None
    name = trunk.get("name", TrunkConfig.name) if isinstance(trunk, dict) else None
    if not isinstance(prep, dict) or name not in TRUNKS:
        return raw  # from_dict names what is wrong
    own = trunk_input(name)
    filled = {k: list(v) for k, v in (("mean", own.mean), ("std", own.std)) if prep.get(k) is None}
    return {**raw, "data": {**data, "preprocessing": {**prep, **filled}}} if filled else raw


def read_recipe(source: str | os.PathLike[str]) -> dict[str, Any]:
    """The keys of a recipe (a packaged recipe's name, or a YAML file's path) merged over its bases."""
    raw: dict[str, Any] = {}
    for _, layer in recipe_layers(source):
        raw = _merge_layer(raw, layer)
    return raw


def load_config(source: str | os.PathLike[str] | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None, baseline: bool = False) -> TrainConfig:
    """Resolve defaults <- ``base`` <- recipe ``source`` <- ``overrides`` <- ``baseline``, then fill in the
    trunk's normalisation where none was set.

    ``source`` is a packaged recipe's name (``fdrl recipes`` lists them) or a YAML file (a ``Path``, or text ending
    in ``.yaml`` or holding a folder). Overrides apply in order; setting ``model_name`` to another model drops the
    head options set before it and keeps the trunk. ``baseline`` does that last, so any command for FDRL plus
    ``--baseline`` gives its baseline twin: the same trunk and sections, one linear layer as the head.
    """
    raw = _lift_trunk_keys(copy.deepcopy(base or {}))
    if source is not None:
        raw = _merge_layer(raw, read_recipe(source))
    steps = [_parse_override(o) for o in overrides or []]
    if baseline:
        steps.append(("model_name", BASELINE_MODEL))
    for key, value in steps:
        if key == "model_name":
            raw = _switch_model(raw, value)
        _set_key(raw, key, value)
        raw = _lift_trunk_keys(raw)
    cfg = from_dict(TrainConfig, _fill_trunk_input(raw))
    _check_model(cfg)
    return cfg


def dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
