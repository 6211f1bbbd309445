"""Face detection and crop/alignment, offline: one module below both ``data/`` (training crops) and
``inference/`` (``fdrl predict``), so both crop a face the same way.

Backends, by name in :data:`DETECTORS` (the one table that ``fdrl``'s ``--detector`` choices and
``data.preprocessing.face_detector`` read), all of which work without a network connection:

- ``opencv``: OpenCV's bundled Haar cascade (ships inside opencv-python-headless), with a detection confidence
  from ``detectMultiScale3``; eyes from the bundled Haar eye cascade.
- ``dlib``: dlib's HOG frontal-face detector (built into dlib, no model file; ``pip install dlib-bin`` or
  ``dlib``); more robust to lighting than Haar; eyes from the Haar eye cascade.
- ``mtcnn``: MTCNN from facenet-pytorch (its weights ship inside that package); five landmarks per face, so
  the eyes come from the detector itself. Needs torchvision.
- ``mtcnn_lite`` (default, :data:`DEFAULT_DETECTOR`): the same MTCNN ported to this package (:mod:`fdrl.mtcnn`,
  weights shipped in ``weights/mtcnn.pt``, no torchvision); five landmarks per face.
- ``mtcnn_lite_tilted``: ``mtcnn_lite`` plus a search of the photo turned by +-45 degrees for tilted faces
  (slower; see :data:`TURN_ANGLE`).
- ``none``: the whole image is one face (already-cropped inputs).

Every backend returns the faces largest first; eye centres, when found, drive the rotation alignment in
:func:`crop_face`. A new backend is one class with ``name`` and ``detect(image) -> list[Face]`` plus one entry
in :data:`DETECTORS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from .errors import DetectorError, ImageReadError, UnknownDetectorError, unknown_name

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# numpy, PIL and the backends' packages are imported where they are used: the CLI reads DETECTORS and
# DEFAULT_MARGIN for its options and must answer `fdrl --help` without loading them.
DEFAULT_MARGIN = 0.2  # detector box enlarged by this fraction per side before cropping (Preprocessing.face_margin)


class Face(NamedTuple):
    """One detected face (a plain record: cheap to import, immutable)."""

    box: tuple[int, int, int, int]  # x, y, w, h in the original image
    score: float  # detector confidence (Haar: level weight; "none": 1.0)
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # left, right eye centres (image coords)


class Detector(Protocol):
    name: str

    def detect(self, image: Image.Image) -> list[Face]:
        """Faces of ``image``, largest first."""
        ...


class NoDetector:
    name = "none"

    def detect(self, image: Image.Image) -> list[Face]:
        return [Face(box=(0, 0, image.width, image.height), score=1.0)]


class HaarEyes:
    """Both eye centres inside a face box from OpenCV's bundled eye cascade, or None when not found."""

    def __init__(self) -> None:
        import cv2

        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")

    def __call__(self, gray: np.ndarray, box: tuple[int, int, int, int]):
        x, y, w, h = box  # clipped to the image by the detectors
        upper = gray[y:y + h // 2, x:x + w]
        if upper.size == 0 or self.cascade.empty():
            return None
        eyes = self.cascade.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=5, minSize=(max(4, w // 10),) * 2)
        if len(eyes) < 2:
            return None
        (ax, ay, aw, ah), (bx, by, bw, bh) = sorted(eyes, key=lambda e: -e[2] * e[3])[:2]
        return plausible_eyes((x + ax + aw / 2, y + ay + ah / 2), (x + bx + bw / 2, y + by + bh / 2), w, h)


def plausible_eyes(left: tuple[float, float], right: tuple[float, float], w: float, h: float):
    """The eye pair ordered left to right in the image, or None when it cannot be a pair of eyes."""
    (lx, ly), (rx, ry) = sorted((tuple(map(float, left)), tuple(map(float, right))))
    if rx - lx < w * 0.2 or abs(ry - ly) > h * 0.25:
        return None
    return (lx, ly), (rx, ry)


def _clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def _cascade_faces(boxes: np.ndarray, probs: np.ndarray, points: np.ndarray, threshold: float, align: bool,
                   width: int, height: int) -> list[Face]:
    """MTCNN's outputs in the photo's pixels (``x0, y0, x1, y1`` boxes, probabilities, five landmarks, eyes first)
    -> the faces at or above ``threshold``, clipped to the ``width`` x ``height`` photo, largest first."""
    faces = []
    for (x0, y0, x1, y1), p, pts in zip(boxes, probs, points, strict=True):
        box = _clip_box(x0, y0, x1 - x0, y1 - y0, width, height)
        if p < threshold or box[2] <= 0 or box[3] <= 0:
            continue
        eyes = plausible_eyes(pts[0], pts[1], box[2], box[3]) if align else None
        faces.append(Face(box=box, score=float(p), eyes=eyes))
    faces.sort(key=lambda f: (-f.box[2] * f.box[3]))
    return faces


def _downscale(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Detect on a downscaled copy of huge photos; returns the copy and its scale."""
    import cv2

    scale = min(1.0, max_side / max(pixels.shape[:2]))
    if scale >= 1:
        return pixels, 1.0
    # An explicit size of at least 1 px a side: fx/fy alone round a 3000x1 strip's height to 0 (cv2.error).
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), scale


class OpenCVDetector:
    """Haar cascade frontal-face detector; smallest face ``min_size`` px."""

    name = "opencv"

    def __init__(self, min_size: int = 24, scale_factor: float = 1.1, min_neighbors: int = 5,
                 align: bool = True, max_side: int = 1280) -> None:
        import cv2

        self.cv2 = cv2
        base = cv2.data.haarcascades
        self.face = cv2.CascadeClassifier(base + "haarcascade_frontalface_default.xml")
        if self.face.empty():
            raise DetectorError(f"OpenCV's Haar cascade could not be loaded from {base}")
        self.eyes = HaarEyes() if align else None
        self.min_size, self.scale_factor, self.min_neighbors = min_size, scale_factor, min_neighbors
        self.max_side = max_side

    def detect(self, image: Image.Image) -> list[Face]:
        import numpy as np

        gray = np.asarray(image.convert("L"))
        small, scale = _downscale(gray, self.max_side)
        small = self.cv2.equalizeHist(small)
        boxes, _, weights = self.face.detectMultiScale3(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        faces = []
        for (x, y, w, h), wt in zip(boxes, np.asarray(weights).reshape(-1), strict=False):
            box = _clip_box(x / scale, y / scale, w / scale, h / scale, gray.shape[1], gray.shape[0])
            faces.append(Face(box=box, score=float(wt), eyes=self.eyes(gray, box) if self.eyes else None))
        faces.sort(key=lambda f: (-f.box[2] * f.box[3]))
        return faces


class DlibDetector:
    """dlib's HOG + linear SVM frontal-face detector (no model file); ``upsample`` finds faces down to ~40 px."""

    name = "dlib"

    def __init__(self, upsample: int = 1, threshold: float = 0.0, align: bool = True, max_side: int = 1280) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise DetectorError("detector 'dlib' needs dlib: pip install dlib-bin (or dlib)") from exc
        self.detector = dlib.get_frontal_face_detector()
        self.upsample, self.threshold, self.max_side = upsample, threshold, max_side
        self.eyes = HaarEyes() if align else None

    def detect(self, image: Image.Image) -> list[Face]:
        import numpy as np

        rgb = np.asarray(image.convert("RGB"))
        small, scale = _downscale(rgb, self.max_side)
        rects, scores, _ = self.detector.run(np.ascontiguousarray(small), self.upsample, self.threshold)
        gray = np.asarray(image.convert("L")) if self.eyes else None
        faces = []
        for r, sc in zip(rects, scores, strict=True):
            box = _clip_box(r.left() / scale, r.top() / scale, r.width() / scale, r.height() / scale,
                            rgb.shape[1], rgb.shape[0])
            if box[2] > 0 and box[3] > 0:
                faces.append(Face(box=box, score=float(sc), eyes=self.eyes(gray, box) if self.eyes else None))
        faces.sort(key=lambda f: (-f.box[2] * f.box[3]))
        return faces


class MTCNNDetector:
    """MTCNN (facenet-pytorch): boxes, probabilities and five landmarks; the eyes are landmarks 0 and 1."""

    name = "mtcnn"

    def __init__(self, min_face_size: int = 20, threshold: float = 0.9, device: str = "cpu",
                 align: bool = True) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise DetectorError(
                "detector 'mtcnn' needs facenet-pytorch and torchvision: pip install facenet-pytorch "
                "(its pins ask for torch<2.3; beside a newer torch use pip install --no-deps facenet-pytorch "
                "requests tqdm)") from exc
        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=device)
        self.threshold, self.align = threshold, align

    def detect(self, image: Image.Image) -> list[Face]:
        import numpy as np

        image = image.convert("RGB")
        boxes, probs, points = self.mtcnn.detect(image, landmarks=True)
        if boxes is None:
            return []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
        return _cascade_faces(boxes, probs, points, self.threshold, self.align, image.width, image.height)


STAGE_THRESHOLDS = (0.6, 0.7, 0.7)  # mtcnn_lite: P-Net, R-Net, O-Net probabilities to pass each stage
FACE_THRESHOLD = 0.7  # mtcnn_lite: final face probability (benchmarks/detectors.py: recall 91.7% -> 93.3% vs 0.9)
# mtcnn_lite: P-Net's threshold on pyramid levels whose 12 px windows stand for at least 64 px of the searched
# photo. These coarse levels have few windows, so letting more through costs little time, and R-Net and O-Net still
# decide (docs/detectors.md "Coarse pyramid levels and tilted faces"). None: STAGE_THRESHOLDS[0] on every level.
LARGE_WINDOWS: tuple[int, float] | None = (64, 0.3)
# mtcnn_lite: smallest face searched, in px of the (at most max_side wide) photo. 40 instead of MTCNN's usual 20
# halves the time per photo (the pyramid's finest level is 4x smaller) and found as many pasted faces (93.3 %;
# at 96 px 95.0 % vs 94.2 %); faces below 40 px hold less than the 48 px the shipped models were trained on.
MIN_FACE_SIZE = 40
# mtcnn_lite: each pyramid level is this fraction of the one before (MTCNN's own 0.709). Denser pyramids, tried on
# benchmarks/detectors.py photos of seeds 0-3 (idle 2 cores): 0.8 found 95.6 % of the pasted faces vs 94.2 % (96 px
# faces alone 94.0 vs 92.1 %) but took 52-70 ms per 1280x720 photo where 0.709 takes 38-55 ms; 0.75 was no better
# than 0.709 and gave one false face on 100 portraits.
PYRAMID_FACTOR = 0.709
# mtcnn_lite: when a photo shows no face, search it once more inside a grey border of this fraction of its short
# side. MTCNN misses faces that fill the frame (close-ups, pre-cropped faces): its windows need the face's outline
# and some context. On benchmarks/detectors.py's portraits (seeds 0-3, 1,600; half are FER2013 faces filling the
# frame) the retry found 1,496 instead of 1,399, with no more false faces there or on 28 real photos
# (docs/detectors.md: an edge-replicated or a 15 % border found fewer); photos where a face is found cost nothing
# extra. 0: off.
BORDER_RETRY = 0.25
# mtcnn_lite: when the border retry finds no face either, a last search on the photo with its contrast stretched
# (PIL's autocontrast, 1 % cut at each end) inside a grey border of this fraction: dark movie frames and faces
# filling more than the frame. On SFEW 2.0's Train faces (aligned movie crops, 860) the plain search and the border
# retry found 787, this one 43 of the remaining 73 (docs/detectors.md). Costs nothing where a face was found. 0: off.
CONTRAST_RETRY = 0.5
# mtcnn_lite_tilted: MTCNN finds faces tilted up to about 30 degrees. This detector also searches the photo turned
# by +-TURN_ANGLE degrees, for faces of at least TURN_MIN_FACE px (on a copy where they are 48 px, O-Net's input); a
# find whose centre lies in an upright face is dropped (lending its eyes where that face has none), and its eyes,
# mapped back, level the crop; proposals centred in upright faces with eyes skip R-Net and O-Net (their finds
# would be dropped). Not the default: the turned photos are 2.2x the area of a 16:9 photo, and a 1280x720 photo
# takes 1.6-1.9x as long (79-85 ms instead of 44-50 on 2 cores; docs/detectors.md).
TURN_ANGLE = 45.0
TURN_MIN_FACE = 96


class MTCNNLiteDetector:
    """MTCNN ported to the package (:mod:`fdrl.mtcnn`): no torchvision, weights shipped; eyes from its
    landmarks. Photos are searched on a copy at most ``max_side`` px wide, for faces from ``min_face_size`` px
    there. Crops cut by the image border are padded (``pad``), which keeps half-visible patterns at the border
    from passing for faces; the thresholds were chosen with ``benchmarks/detectors.py`` (docs/detectors.md).
    ``turn_angle`` > 0 also searches the photo turned by that many degrees either way (``mtcnn_lite_tilted``)."""

    def __init__(self, min_face_size: int = MIN_FACE_SIZE, thresholds: tuple[float, float, float] = STAGE_THRESHOLDS,
                 threshold: float = FACE_THRESHOLD, pad: bool = True, max_side: int = 1280,
                 align: bool = True, factor: float = PYRAMID_FACTOR, border_retry: float = BORDER_RETRY,
                 contrast_retry: float = CONTRAST_RETRY, turn_angle: float = 0.0, turn_min_face: int = TURN_MIN_FACE,
                 large_windows: tuple[int, float] | None = LARGE_WINDOWS) -> None:
        from .mtcnn import MTCNN

        self.net = MTCNN(min_face_size=min_face_size, thresholds=thresholds, factor=factor, pad=pad,
                         large_windows=large_windows)
        self.threshold, self.max_side, self.align = threshold, max_side, align
        self.border_retry, self.turn_angle, self.turn_min_face = border_retry, turn_angle, turn_min_face
        self.contrast_retry = contrast_retry

    @property
    def name(self) -> str:
        """The registry name these settings answer to: the tilted search is ``mtcnn_lite_tilted``."""
        return "mtcnn_lite_tilted" if self.turn_angle > 0 else "mtcnn_lite"

    @property
    def key(self) -> str:
        """Names what changes the crops, for caches of cropped frames (:class:`FaceCropper`); the plain name is the
        key of caches made before the border retry existed."""
        key = f"{self.name}+border{self.border_retry:g}" if self.border_retry > 0 else self.name
        if self.contrast_retry > 0:
            key += f"+contrast{self.contrast_retry:g}"
        if self.net.large_windows is not None:
            key += "+large{}@{:g}".format(*self.net.large_windows)
        return f"{key}+turn{self.turn_angle:g}@{self.turn_min_face}" if self.turn_angle > 0 else key

    def detect(self, image: Image.Image) -> list[Face]:
        import numpy as np
        from PIL import Image, ImageOps

        rgb = np.asarray(image.convert("RGB"))
        small, scale = _downscale(rgb, self.max_side)
        faces = self._search(small, 0, scale, rgb.shape[1], rgb.shape[0])
        for fraction, stretch in ((self.border_retry, False), (self.contrast_retry, True)):
            if faces or fraction <= 0:
                continue
            # a face filling the frame: search again with room around it (and, last, with the contrast stretched)
            pixels = np.asarray(ImageOps.autocontrast(Image.fromarray(small), cutoff=1)) if stretch else small
            border = max(1, int(round(fraction * min(small.shape[:2]))))
            framed = np.pad(pixels, ((border, border), (border, border), (0, 0)), constant_values=128)
            faces = self._search(framed, border, scale, rgb.shape[1], rgb.shape[0])
        return faces

    def _search(self, pixels: np.ndarray, border: int, scale: float, width: int, height: int) -> list[Face]:
        """Faces found in ``pixels`` (the photo scaled by ``scale`` inside ``border`` px of frame), upright and
        tilted, as boxes and eyes in the photo's own pixels, largest first."""
        import numpy as np

        boxes, probs, points = self.net.detect(pixels)
        faces = _cascade_faces((boxes - border) / scale, probs, (points - border) / scale, self.threshold,
                               self.align, width, height)
        if self.turn_angle > 0:
            known = [np.array(f.box, dtype=float) * scale + (border, border, 0, 0) for f in faces if f.eyes is not None]
            for p, cx, cy, side, eyes in self._tilted(pixels, border, scale, known):
                inside = [i for i, (x, y, w, h) in enumerate(f.box for f in faces)
                          if x <= cx <= x + w and y <= cy <= y + h]
                if inside:  # found already; upright MTCNN finds faces tilted ~45 degrees but not their eyes
                    if faces[inside[0]].eyes is None:
                        faces[inside[0]] = faces[inside[0]]._replace(eyes=eyes)
                    continue
                box = _clip_box(cx - side / 2, cy - side / 2, side, side, width, height)
                if box[2] > 0 and box[3] > 0:
                    faces.append(Face(box=box, score=p, eyes=eyes))
            faces.sort(key=lambda f: -f.box[2] * f.box[3])
        return faces

    def _tilted(self, pixels: np.ndarray, border: int, scale: float, known: Sequence[np.ndarray] = ()) -> list[tuple]:
        """Faces found on copies of ``pixels`` turned by +-``turn_angle``, most probable first, as
        ``(probability, centre x, centre y, side, eyes)`` in the photo's pixels. Only finds with a plausible eye
        pair count, and only when O-Net, shown the crop levelled by those eyes, agrees it is a face: on real
        photos the turned search alone took parts of motorcycles for faces (O-Net then gave them 0.07 and 0.01).
        Proposals centred in a ``known`` box (``x, y, w, h`` in ``pixels``: upright faces with eyes, whose finds
        would be dropped) skip R-Net and O-Net."""
        import cv2
        import numpy as np

        if min(pixels.shape[:2]) < self.turn_min_face:  # no face that large fits (and a thin strip would shrink
            return []  # to 0 px below)
        shrink = min(1.0, 48 / self.turn_min_face)  # the smallest face searched is 48 px (O-Net's input) there
        copy = cv2.resize(pixels, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1 else pixels
        found = []  # (probability, centre, side, eyes) in the pixels of ``pixels``
        for angle in (self.turn_angle, -self.turn_angle):
            turned, back = _turn(copy, angle)

            def unseen(centres: np.ndarray, back: np.ndarray = back) -> np.ndarray:
                x, y = (_apply(back, centres) / shrink).T
                inside = np.zeros(len(centres), dtype=bool)
                for bx, by, bw, bh in known:
                    inside |= (x >= bx) & (x <= bx + bw) & (y >= by) & (y <= by + bh)
                return ~inside

            boxes, probs, points = self.net.detect(turned, min_face_size=max(12, round(self.turn_min_face * shrink)),
                                                   keep_proposals=unseen)
            for box, p, pts in zip(boxes, probs, points, strict=True):
                (x0, y0, x1, y1), eyes = box, plausible_eyes(pts[0], pts[1], box[2] - box[0], box[3] - box[1])
                if p >= self.threshold and eyes is not None:
                    found.append((float(p), _apply(back, np.array([(x0 + x1) / 2, (y0 + y1) / 2])) / shrink,
                                  max(x1 - x0, y1 - y0) / shrink, _apply(back, np.array(eyes)) / shrink))
        if not found:
            return []
        eyes = np.array([f[3] for f in found])
        eyes = eyes[np.arange(len(found))[:, None], eyes[:, :, 0].argsort(1)]  # left to right in the photo
        angles = np.degrees(np.arctan2(eyes[:, 1, 1] - eyes[:, 0, 1], eyes[:, 1, 0] - eyes[:, 0, 0]))
        agree = self.net.rescore(pixels, np.array([f[1] for f in found]), np.array([f[2] for f in found]), angles)
        faces = [(p, *((centre - border) / scale), side / scale,
                  tuple(map(tuple, ((pair - border) / scale).tolist())) if self.align else None)
                 for (p, centre, side, _), pair, ok in zip(found, eyes, agree >= self.threshold, strict=True) if ok]
        return sorted(faces, key=lambda f: -f[0])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points ``(..., 2)`` (x, y) moved by a 2x3 affine ``matrix``."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def _turn(pixels: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """``pixels`` turned by ``angle`` degrees counter-clockwise on a grey canvas that holds all of it, and the 2x3
    matrix taking the turned canvas's pixel coordinates back to ``pixels``'."""
    import cv2
    import numpy as np

    h, w = pixels.shape[:2]
    forward = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(forward[0, 0]), abs(forward[0, 1])
    size = (int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin)))
    forward[:, 2] += (size[0] - w) / 2, (size[1] - h) / 2
    turned = cv2.warpAffine(pixels, forward, size, flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
    return turned, cv2.invertAffineTransform(forward)


# name -> builder(device); the order is the order of ``--detector`` choices. Optional backends import their
# package when built, so listing them costs nothing.
DETECTORS: dict[str, Callable[[str], Detector]] = {
    "opencv": lambda device: OpenCVDetector(),
    "dlib": lambda device: DlibDetector(),
    "mtcnn": lambda device: MTCNNDetector(device=device),
    "mtcnn_lite": lambda device: MTCNNLiteDetector(),
    "mtcnn_lite_tilted": lambda device: MTCNNLiteDetector(turn_angle=TURN_ANGLE),
    "none": lambda device: NoDetector(),
}
# For photos when the checkpoint names none (fdrl predict, fdrl serve, Recognizer). mtcnn_lite: recall 96.7 / 98.3 %
# vs Haar's 65.8 % on benchmarks/detectors.py's pasted faces, no false face on its portraits, and the shipped
# FER2013 model scores at least as well on its crops as on Haar's (docs/detectors.md).
DEFAULT_DETECTOR = "mtcnn_lite"


def check_detector_name(name: str) -> str:
    """``name`` itself when it is a registered detector, else :class:`UnknownDetectorError` listing them."""
    if name not in DETECTORS:
        raise unknown_name("detector", name, DETECTORS, UnknownDetectorError)
    return name


def create_detector(name: str, device: str = "cpu") -> Detector:
    """A face detector by name (see the module docstring); optional backends import their package here."""
    return DETECTORS[check_detector_name(name)](device)


class FaceCropper:
    """The largest face of an image, cropped and eye-aligned as at inference; for data sets of uncropped frames.

    When no upright face is found, the frame turned a quarter either way is tried too: some sequence archives
    (e.g. parts of MMI) store camera-rotated video, and the crop then comes out upright.
    """

    def __init__(self, detector: str, margin: float = DEFAULT_MARGIN, try_rotations: bool = True) -> None:
        self.detector, self.margin, self.try_rotations = create_detector(detector), margin, try_rotations
        found_by = getattr(self.detector, "key", detector)
        self.key = f"{found_by}:{margin}:{'rot' if try_rotations else 'upright'}"  # part of the cache fingerprint

    def __call__(self, image: Image.Image) -> Image.Image:
        from PIL import Image

        turns = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270) if self.try_rotations else (None,)
        for turn in turns:
            view = image.transpose(turn) if turn is not None else image
            faces = self.detector.detect(view)
            if faces:
                return crop_face(view, faces[0], self.margin)
        raise ImageReadError(f"no face found by the {self.detector.name} detector")


def crop_face(image: Image.Image, face: Face, margin: float) -> Image.Image:
    """Square crop around the face box enlarged by ``margin`` per side, rotated so the eyes are level."""
    from PIL import Image

    x, y, w, h = face.box
    cx, cy = x + w / 2, y + h / 2
    side = max(w, h) * (1 + 2 * margin)
    if face.eyes is not None:
        (lx, ly), (rx, ry) = face.eyes
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
        if abs(angle) > 1.0:
            image = image.rotate(angle, resample=Image.BILINEAR, center=(cx, cy))
    box = (int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(cx + side / 2)), int(round(cy + side / 2)))
    return image.crop(box)  # PIL pads out-of-image areas with black
