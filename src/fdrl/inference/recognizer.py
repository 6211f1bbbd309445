"""``fdrl.Recognizer``: from photos (paths, folders, PIL, numpy) or pre-cropped face tensors to per-face expression
probabilities.

The preprocessing (face margin, size, grayscale, normalisation) comes from the checkpoint (or the ONNX file's
metadata), never from literals repeated here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import Preprocessing
from ..data.preprocess import BatchTransform, as_model_input, pil_to_array, tta_views
from ..errors import FdrlError, InputError, first_line
from ..faces import DEFAULT_DETECTOR, Face, create_detector, crop_face
from ..runtime import resolve_device
from .backends import open_backend
from .inputs import photo_inputs
from .lookup import packaged_checkpoint
from .packaged import DEFAULT_MODEL, DEFAULT_TTA, TTA_MODES, WHOLE_IMAGE_MAX_SIDE
from .results import FaceResult, ImageStatus, PredictionResult


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


class Recognizer:
    """Detect faces, preprocess them as the checkpoint says, and classify their expressions."""

    def __init__(self, checkpoint: str | os.PathLike[str] | None = None, detector: str | None = None,
                 device: str = "cpu", batch_size: int = 64, model: str | None = None,
                 tta: str = DEFAULT_TTA, whole_image_max_side: int = WHOLE_IMAGE_MAX_SIDE) -> None:
        """``checkpoint``: an fdrl .pt, exported .onnx or TorchScript file; or ``model``: a packaged model's name
        (``PACKAGED_MODELS``); neither: the default packaged model. ``detector=None``: the detector the checkpoint
        was trained with (its preprocessing), else ``DEFAULT_DETECTOR``. ``tta``: ``none``, ``flip`` (2 views) or
        ``tencrop`` (10 views), probabilities averaged over the views. ``whole_image_max_side``: an image no
        larger than this (px, longer side) without a detected face is classified whole as a face crop (status
        ``whole_image``); 0: never. ``device``: ``cpu``, ``cuda[:N]`` or
        ``auto`` (:func:`fdrl.runtime.resolve_device`; a device this machine lacks is a
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
        self.whole_image_max_side = whole_image_max_side

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

    def _faces(self, image: Image.Image) -> tuple[list[Face], list[Image.Image], str]:
        """The faces of a photo, their crops and the photo's status (``ok``, ``whole_image``, ``no_face``)."""
        faces = self.detector.detect(image)
        if not faces and max(image.size) <= self.whole_image_max_side:
            return [Face(box=(0, 0, *image.size), score=0.0)], [image], "whole_image"
        return faces, [crop_face(image, f, self.prep.face_margin) if self.detector.name != "none" else image
                       for f in faces], "ok" if faces else "no_face"

    # ---- API ---------------------------------------------------------------------------------------------
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
        x = as_model_input(x, self.prep.input_size, self.prep.grayscale, self.prep.source_size)
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
        mixing them), each classified; every input image gets a status (``ok``, ``whole_image``, ``no_face``,
        ``unreadable: ...``, also for an image the detector fails on), so one bad image never costs the others'
        results. A tensor is refused: it used to be taken as an already-cropped face, so the same photo answered
        differently as a tensor and as a file; :meth:`predict_tensor` is the explicit call for pre-cropped faces."""
        if isinstance(inputs, torch.Tensor):
            raise InputError("predict() detects faces in photos (paths, PIL images, numpy HxWx3 uint8 arrays) and "
                             "does not take tensors; for a batch of pre-cropped faces (no detection) call "
                             "predict_tensor(batch), or pass the photo as a PIL image or numpy array")
        return self.predict_images(photo_inputs(inputs, bgr))

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
                faces, crops, status = self._faces(image)
            except (FdrlError, cv2.error) as exc:  # this image is unusable; a bug elsewhere keeps its traceback
                res.images.append(ImageStatus(iid, f"unreadable: face detection failed "
                                                   f"({type(exc).__name__}: {first_line(exc)})"))
                continue
            res.images.append(ImageStatus(iid, status, len(faces)))
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
            faces, crops, _ = self._faces(image)
            buf.append((idx, arr, faces, crops))
            if sum(len(b[2]) for b in buf) >= self.batch_size or len(buf) >= self.batch_size:
                yield from flush()
        yield from flush()
