"""``fdrl.Recognizer``: from photos (paths, folders, PIL, numpy) or pre-cropped face tensors to per-face expression
probabilities.

The preprocessing (face margin, size, grayscale, normalisation) comes from the checkpoint (or the ONNX file's
metadata), never from literals repeated here.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from ..config import Preprocessing
from ..data.base import IMAGE_EXTENSIONS, ImageReadError, image_read_errors, read_image, to_rgb
from ..data.decode import pil_to_array
from ..data.tensors import BatchTransform, resize_batch, tta_views
from ..engine.runtime import resolve_device
from ..errors import FdrlError, InputError, first_line
from ..faces import DEFAULT_DETECTOR, Face, create_detector, crop_face
from ..shipped import shipped_file
from .packaged import DEFAULT_MODEL, DEFAULT_TTA, PACKAGED_MODELS, TTA_MODES


def packaged_checkpoint(name: str = DEFAULT_MODEL) -> Path:
    """The packaged model called ``name``; a clear error for an unknown name or an install without it."""
    if name not in PACKAGED_MODELS:
        raise CheckpointError(f"unknown packaged model {name!r} (available: {', '.join(PACKAGED_MODELS)})")
    path = shipped_file(name)
    if not path.is_file():
        raise CheckpointError(f"packaged model {name!r} ({PACKAGED_MODELS[name]}) is not in this installation; "
                              "pass --checkpoint/checkpoint= an fdrl .pt or exported .onnx file")
    return path


def describe_packaged(name: str) -> str:
    """One line on a shipped model for ``fdrl models``: classes, trunk and input, the data it was trained and
    selected on with its validation accuracy at that epoch (as trained, fp32), and where its model card is."""
    raw = read_checkpoint(packaged_checkpoint(name))
    data = (raw.get("config") or {}).get("data", {})
    acc = (raw.get("metrics") or {}).get("val_accuracy")
    card = shipped_file(name, cards=True)
    trained = f"trained on {data.get('dataset', '?')} {data.get('train_split', '?')}, " if data else ""
    val = f"{data.get('val_split', 'val')} accuracy {100 * acc:.2f} % at epoch {raw.get('epoch')}; " if acc else ""
    return (f"{len(raw['classes'])} classes ({', '.join(raw['classes'])}); {raw['model_name']} on "
            f"{raw['model_config'].get('trunk', 'resnet18')} at {raw['preprocessing']['input_size']} px; {trained}"
            f"{val}card {card}")


def default_checkpoint() -> Path:
    """The default packaged model."""
    return packaged_checkpoint(DEFAULT_MODEL)


@dataclass
class FaceResult:
    image_id: str
    face_index: int
    box: tuple[int, int, int, int]
    score: float
    label: str
    confidence: float
    probabilities: dict[str, float]
    alpha: list[float] | None = None
    frame: int | None = None


@dataclass
class ImageStatus:
    image_id: str
    status: str  # "ok", "no_face", "unreadable: <reason>"
    faces: int = 0


@dataclass
class PredictionResult:
    faces: list[FaceResult] = field(default_factory=list)
    images: list[ImageStatus] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    COLUMNS = ("image_id", "frame", "face_index", "status", "x", "y", "w", "h", "score", "label", "confidence")

    @property
    def failed(self) -> list[ImageStatus]:
        return [s for s in self.images if s.status.startswith("unreadable")]

    def rows(self) -> list[dict[str, Any]]:
        """One row per face, plus one row for each image without a face or unreadable (fixed columns)."""
        status = {s.image_id: s.status for s in self.images}
        rows = []
        for f in self.faces:
            row = {"image_id": f.image_id, "frame": f.frame, "face_index": f.face_index,
                   "status": status.get(f.image_id, "ok"), "x": f.box[0], "y": f.box[1], "w": f.box[2],
                   "h": f.box[3], "score": round(f.score, 4), "label": f.label, "confidence": round(f.confidence, 4)}
            row.update({f"p_{c}": round(f.probabilities[c], 5) for c in self.classes})
            if f.alpha is not None:
                row.update({f"alpha_{j + 1}": round(a, 5) for j, a in enumerate(f.alpha)})
            rows.append(row)
        for s in self.images:
            if s.faces == 0:
                rows.append({k: None for k in self.COLUMNS} | {"image_id": s.image_id, "status": s.status})
        return rows

    def to_pandas(self):
        import pandas as pd

        cols = list(self.COLUMNS) + [f"p_{c}" for c in self.classes]
        rows = self.rows()
        extra = sorted({k for r in rows for k in r if k.startswith("alpha_")}, key=lambda k: int(k.split("_")[1]))
        return pd.DataFrame(rows, columns=cols + extra)

    def to_json(self) -> str:
        return json.dumps({"classes": self.classes, "images": [asdict(s) for s in self.images],
                           "faces": [asdict(f) for f in self.faces]}, indent=2)


class _TorchBackend:
    fixed_batch: int | None = None  # an fdrl checkpoint takes any batch size

    def __init__(self, path: str | os.PathLike[str], device: str) -> None:
        loaded = load_checkpoint(path, map_location="cpu")
        self.device = torch.device(device)
        self.model = loaded.model.to(self.device).eval()
        self.classes, self.prep = loaded.classes, loaded.preprocessing

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.model(x.to(self.device))
        return out.logits.float().cpu().numpy(), None if out.alpha is None else out.alpha.float().cpu().numpy()


class _OnnxBackend:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        import onnxruntime as ort

        from .export import read_onnx_metadata

        self.path = os.fspath(path)
        try:  # onnxruntime's errors derive from Exception only; one line naming the file instead of a traceback
            self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - InvalidProtobuf, NoSuchFile, Fail, ... share no base class
            raise CheckpointError(f"{self.path}: not a readable ONNX model "
                                  f"(expected a file written by `fdrl export --format onnx`): "
                                  f"{first_line(exc)}") from exc
        meta = read_onnx_metadata(self.session)
        self.classes, self.prep = meta["classes"], Preprocessing(**meta["preprocessing"])
        self.fixed_batch = meta["fixed_batch"]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            res = self.session.run(None, {"images": x.numpy().astype(np.float32)})
        except Exception as exc:  # noqa: BLE001 - InvalidArgument (shape, type) and Fail have no common base
            expected = self.session.get_inputs()[0].shape
            raise CheckpointError(f"{self.path}: the ONNX model expects input 'images' of shape {expected} "
                                  f"(float32), got {list(x.shape)}: {first_line(exc)}") from exc
        alpha = res[1] if len(res) > 1 and res[1].shape[-1] > 0 else None
        return res[0], alpha


class _TorchScriptBackend:
    """A module written by ``fdrl export --format torchscript``. TorchScript runs the code stored in the file
    (not pickled Python, but still code): load only files you exported or trust."""

    def __init__(self, path: str | os.PathLike[str], device: str) -> None:
        from .export import TORCHSCRIPT_META, parse_metadata

        extra = {TORCHSCRIPT_META: ""}
        self.device = torch.device(device)
        try:
            self.module = torch.jit.load(os.fspath(path), map_location=self.device, _extra_files=extra).eval()
            meta = parse_metadata(json.loads(extra[TORCHSCRIPT_META] or "{}"), "TorchScript")
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a usable fdrl TorchScript export: {str(exc)[:300]}") from exc
        self.classes, self.prep = meta["classes"], Preprocessing(**meta["preprocessing"])
        self.fixed_batch = meta["fixed_batch"]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        logits, alpha = self.module(x.to(self.device))
        return logits.float().cpu().numpy(), alpha.float().cpu().numpy() if alpha.shape[-1] > 0 else None


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold ``<name>/code/``; fdrl checkpoints (also zip files) do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.split("/")[1:2] == ["code"] for n in zf.namelist())


def open_backend(path: Path, device: str = "cpu") -> _TorchBackend | _OnnxBackend | _TorchScriptBackend:
    """The runtime for a model file: ``.onnx`` -> onnxruntime, a TorchScript archive -> torch.jit, else an fdrl
    checkpoint. Each exposes ``classes``, ``prep`` (with the training detector) and ``fixed_batch``."""
    if path.suffix.lower() == ".onnx":
        return _OnnxBackend(path)
    if path.is_file() and _is_torchscript(path):
        return _TorchScriptBackend(path, device)
    return _TorchBackend(path, device)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _check_array(arr: np.ndarray) -> None:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.dtype != np.uint8:
        raise InputError(f"numpy input must be HxWx3 (or HxWx4, or HxW) uint8, got shape {arr.shape} {arr.dtype}")


def _array_image(arr: np.ndarray, bgr: bool) -> Image.Image:
    """A checked HxW, HxWx3 or HxWx4 uint8 array (``bgr``: OpenCV's channel order) as an RGB image."""
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    arr = arr[..., :3]
    return Image.fromarray(np.ascontiguousarray(arr[..., ::-1] if bgr else arr))


def _in_memory(convert: Callable[[], Image.Image]) -> Image.Image | ImageReadError:
    """An in-memory input as RGB, or the reason it cannot be used (an empty image; a lazily opened file that
    fails to decode now) in its place, so one bad item does not stop the others."""
    try:
        with image_read_errors():
            image = convert()
            if image.width == 0 or image.height == 0:
                raise ImageReadError(f"empty image ({image.width}x{image.height} pixels)")
            return image
    except ImageReadError as exc:
        return exc


def iter_image_paths(inputs: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files as given; folders walked recursively (sorted) for image extensions."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    yield f
        else:
            yield p


class Recognizer:
    """Detect faces, preprocess them as the checkpoint says, and classify their expressions."""

    def __init__(self, checkpoint: str | os.PathLike[str] | None = None, detector: str | None = None,
                 device: str = "cpu", batch_size: int = 64, model: str | None = None,
                 tta: str = DEFAULT_TTA) -> None:
        """``checkpoint``: an fdrl .pt, exported .onnx or TorchScript file; or ``model``: a packaged model's name
        (``PACKAGED_MODELS``); neither: the default packaged model. ``detector=None``: the detector the checkpoint
        was trained with (its preprocessing), else ``DEFAULT_DETECTOR``. ``tta``: ``none``, ``flip`` (2 views) or
        ``tencrop`` (10 views), probabilities averaged over the views. ``device``: ``cpu``, ``cuda[:N]`` or
        ``auto`` (:func:`fdrl.engine.runtime.resolve_device`; a device this machine lacks is a
        :class:`~fdrl.errors.DeviceError`)."""
        if checkpoint is not None and model is not None:
            raise ValueError("give either checkpoint= or model=, not both")
        if tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
        path = Path(checkpoint) if checkpoint is not None else packaged_checkpoint(model or DEFAULT_MODEL)
        device = str(resolve_device(device))
        self.tta = tta
        self.backend = open_backend(path, device)
        self.classes: list[str] = list(self.backend.classes)
        self.prep: Preprocessing = self.backend.prep
        self.transform = BatchTransform(self.prep.mean, self.prep.std)
        trained = self.prep.face_detector
        self.detector = create_detector(detector or (trained if trained != "none" else DEFAULT_DETECTOR), device=device)
        self.batch_size = batch_size
        self.checkpoint = str(path)

    # ---- preprocessing -----------------------------------------------------------------------------------
    def face_tensor(self, crops: list[Image.Image]) -> torch.Tensor:
        """Face crops -> the normalised model input batch, preprocessed as the checkpoint says."""
        p = self.prep
        arr = np.stack([pil_to_array(c, p.input_size, p.grayscale, p.source_size) for c in crops])
        return self.transform(torch.from_numpy(arr))

    def classify(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities (N, K) and alpha (N, M) or None of a normalised face batch from
        :meth:`face_tensor` (for callers that crop faces themselves), averaged over the TTA views of each face,
        in chunks of ``batch_size``; a model exported with a fixed batch gets chunks of exactly that size (the
        last one padded with zeros, its extra rows dropped)."""
        fixed = self.backend.fixed_batch
        step = fixed or self.batch_size
        probs, alphas = [], []
        for i in range(0, len(x), step):
            views = tta_views(x[i:i + step], self.tta)
            n = len(views[0])
            p_sum, a_sum = 0.0, None
            for chunk in views:
                if fixed and n < fixed:
                    chunk = torch.cat([chunk, chunk.new_zeros(fixed - n, *chunk.shape[1:])])
                logits, alpha = self.backend(chunk)
                p_sum = p_sum + _softmax(logits[:n].astype(np.float64))
                if alpha is not None:
                    a_sum = alpha[:n] if a_sum is None else a_sum + alpha[:n]
            probs.append(p_sum / len(views))
            if a_sum is not None:
                alphas.append(a_sum / len(views))
        return np.concatenate(probs), (np.concatenate(alphas) if alphas else None)

    def _faces(self, image: Image.Image) -> tuple[list[Face], list[Image.Image]]:
        faces = self.detector.detect(image)
        return faces, [crop_face(image, f, self.prep.face_margin) if self.detector.name != "none" else image
                       for f in faces]

    # ---- API ---------------------------------------------------------------------------------------------
    def _inputs(self, inputs: Any, bgr: bool) -> Iterator[tuple[str, Image.Image | Exception]]:
        """Each item of ``inputs`` (or ``inputs`` itself) dispatched on its type: a path or folder (walked), a PIL
        image (id ``image<i>``) or a numpy array (id ``array<i>``), ``i`` its place in the list. Types and array
        shapes are checked before any image is processed; a bad image becomes an exception in its place."""
        single = isinstance(inputs, Image.Image | np.ndarray | str | os.PathLike)
        items = [inputs] if single else list(inputs)
        for item in items:
            if isinstance(item, np.ndarray):
                _check_array(item)
            elif not isinstance(item, Image.Image | str | os.PathLike):
                raise InputError(f"predict() takes paths, folders, PIL images and HxWx3 uint8 numpy arrays (or a "
                                 f"list of them), got {type(item).__name__}")
        for i, item in enumerate(items):
            if isinstance(item, Image.Image):
                yield f"image{i}", _in_memory(lambda item=item: to_rgb(item))
            elif isinstance(item, np.ndarray):
                yield f"array{i}", _in_memory(lambda item=item: _array_image(item, bgr))
            else:
                for p in iter_image_paths([item]):
                    try:
                        yield str(p), read_image(p)
                    except ImageReadError as exc:
                        yield str(p), exc

    def predict_tensor(self, batch: torch.Tensor) -> PredictionResult:
        """Pre-cropped faces, no detection: a (B, C, H, W) batch, each item one face filling the frame, uint8
        (0-255) or float in [0, 1]; the box of each is the whole item. For photos (faces found by the
        detector) pass paths, PIL images or numpy arrays to :meth:`predict`."""
        if batch.dim() != 4 or batch.shape[1] not in (1, 3):
            raise InputError(f"predict_tensor: expected a (B, 1|3, H, W) batch of face crops, "
                             f"got shape {tuple(batch.shape)}")
        if batch.dtype != torch.uint8:
            if not batch.is_floating_point():
                raise InputError(f"predict_tensor: expected uint8 (0-255) or float (0-1) values, got {batch.dtype}")
            lo, hi = (float(batch.min()), float(batch.max())) if batch.numel() else (0.0, 0.0)
            if not (0.0 <= lo and hi <= 1.0):  # also catches NaN; a 0-255 float would be clamped to white
                raise InputError(f"predict_tensor: float values must lie in [0, 1], got min {lo:g}, max {hi:g}; "
                                 f"divide 0-255 pixels by 255 or pass a uint8 tensor")
        x = batch if batch.dtype == torch.uint8 else (batch * 255).round().to(torch.uint8)
        if self.prep.grayscale and x.shape[1] == 3:
            x = (x.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).round()
            x = x.to(torch.uint8)
        x = resize_batch(x, self.prep.input_size, self.prep.source_size)
        probs, alpha = self.classify(self.transform(x))
        res = PredictionResult(classes=self.classes)
        for i in range(len(x)):
            iid = f"tensor{i}"
            res.images.append(ImageStatus(iid, "ok", 1))
            res.faces.append(self._face_result(iid, 0, (0, 0, batch.shape[-1], batch.shape[-2]), 1.0, probs[i],
                                               None if alpha is None else alpha[i]))
        return res

    def _face_result(self, iid: str, k: int, box, score: float, p: np.ndarray, a, frame: int | None = None):
        top = int(p.argmax())
        return FaceResult(iid, k, tuple(int(v) for v in box), score, self.classes[top], float(p[top]),
                          {c: float(v) for c, v in zip(self.classes, p, strict=True)},
                          None if a is None else [float(v) for v in a], frame)

    def predict(self, inputs: Any, bgr: bool = False) -> PredictionResult:
        """Faces found by the detector in photos (paths, folders, PIL images, HxWx3 uint8 numpy arrays, or a list
        mixing them), each classified; every input image gets a status (``ok``, ``no_face``, ``unreadable: ...``,
        also for an image the detector fails on), so one bad image never costs the others' results. A tensor is
        refused: it used to be taken as an already-cropped face, so the same photo answered differently as a
        tensor and as a file; :meth:`predict_tensor` is the explicit call for pre-cropped faces."""
        if isinstance(inputs, torch.Tensor):
            raise InputError("predict() detects faces in photos (paths, PIL images, numpy HxWx3 uint8 arrays) and "
                             "does not take tensors; for a batch of pre-cropped faces (no detection) call "
                             "predict_tensor(batch), or pass the photo as a PIL image or numpy array")
        return self.predict_images(self._inputs(inputs, bgr))

    def predict_images(self, items: Iterable[tuple[str, Image.Image | Exception]]) -> PredictionResult:
        """Images already decoded, each with its id (the HTTP server names them after the uploaded files); an
        exception in place of an image marks it unreadable, its message becoming the status."""
        res = PredictionResult(classes=self.classes)
        pending: list[tuple[str, int, Face, Image.Image]] = []

        def flush() -> None:
            if not pending:
                return
            probs, alpha = self.classify(self.face_tensor([c for *_, c in pending]))
            for i, (iid, k, face, _) in enumerate(pending):
                res.faces.append(self._face_result(iid, k, face.box, face.score, probs[i],
                                                   None if alpha is None else alpha[i]))
            pending.clear()

        import cv2

        for iid, image in items:
            if isinstance(image, Exception):
                res.images.append(ImageStatus(iid, f"unreadable: {image}"))
                continue
            try:
                faces, crops = self._faces(image)
            except (FdrlError, cv2.error) as exc:  # this image is unusable; a bug elsewhere keeps its traceback
                res.images.append(ImageStatus(iid, f"unreadable: face detection failed "
                                                   f"({type(exc).__name__}: {first_line(exc)})"))
                continue
            res.images.append(ImageStatus(iid, "ok" if faces else "no_face", len(faces)))
            pending.extend((iid, k, f, c) for k, (f, c) in enumerate(zip(faces, crops, strict=True)))
            if len(pending) >= self.batch_size:
                flush()
        flush()
        return res

    def predict_frames(self, frames: Iterable[tuple[int, np.ndarray]], bgr: bool = True) -> Iterator[
            tuple[int, np.ndarray, list[FaceResult]]]:
        """Video: (frame index, HxWx3 array) pairs -> (index, array, faces), batched across frames."""
        buf: list[tuple[int, np.ndarray, list[Face], list[Image.Image]]] = []

        def flush():
            crops = [c for *_, cs in buf for c in cs]
            probs, alpha = self.classify(self.face_tensor(crops)) if crops else (None, None)
            n = 0
            for idx, arr, faces, _ in buf:
                out = []
                for k, f in enumerate(faces):
                    out.append(self._face_result(f"frame{idx}", k, f.box, f.score, probs[n],
                                                 None if alpha is None else alpha[n], frame=idx))
                    n += 1
                yield idx, arr, out
            buf.clear()

        for idx, arr in frames:
            image = Image.fromarray(np.ascontiguousarray(arr[..., ::-1] if bgr else arr))
            faces, crops = self._faces(image)
            buf.append((idx, arr, faces, crops))
            if sum(len(b[2]) for b in buf) >= self.batch_size or len(buf) >= self.batch_size:
                yield from flush()
        yield from flush()


def annotate(image: Image.Image, faces: list[FaceResult], top: int = 3) -> Image.Image:
    """Boxes and top-``top`` labels drawn on a copy of ``image``; labels never cover each other
    (:func:`fdrl.inference.labels.place_labels`)."""
    from PIL import ImageDraw

    from .labels import place_labels

    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    lw = max(2, out.width // 300)
    lines = [[f"{c} {p:.2f}" for c, p in sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:top]]
             for f in faces]
    spots = place_labels([f.box for f in faces], [(7 * max(map(len, t), default=0), 12 * len(t)) for t in lines],
                         out.size)
    for f in faces:
        x, y, w, h = f.box
        d.rectangle([x, y, x + w, y + h], outline=(0, 255, 0), width=lw)
    for texts, (lx, ly, rx, _) in zip(lines, spots, strict=True):
        for i, text in enumerate(texts):
            ty = ly + i * 12
            d.rectangle([lx, ty, rx - 1, ty + 11], fill=(0, 0, 0))
            d.text((lx + 1, ty), text, fill=(255, 255, 0) if i == 0 else (255, 255, 255))
    return out
