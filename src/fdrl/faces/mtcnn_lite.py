"""``mtcnn_lite`` (the default) and ``mtcnn_lite_tilted``: MTCNN ported to this package (:mod:`fdrl.faces.mtcnn`,
weights shipped in ``weights/mtcnn.pt``, no torchvision), with retries for faces that fill the frame and an optional
search of the photo turned by +-45 degrees for tilted faces. The constants below were chosen with
``benchmarks/detectors.py`` (docs/detectors.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import Face, cascade_faces, clip_box, downscale, plausible_eyes

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

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
    """MTCNN ported to the package (:mod:`fdrl.faces.mtcnn`): no torchvision, weights shipped; eyes from its
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
        small, scale = downscale(rgb, self.max_side)
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
        faces = cascade_faces((boxes - border) / scale, probs, (points - border) / scale, self.threshold,
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
                box = clip_box(cx - side / 2, cy - side / 2, side, side, width, height)
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
