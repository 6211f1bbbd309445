"""MTCNN face detection in plain PyTorch, with its weights inside the package (no torchvision, no download).

A port of facenet-pytorch 2.6.0's MTCNN (MIT): P-Net proposes faces over an image pyramid, R-Net and O-Net
rescore and refine them, O-Net also places five landmarks (eyes, nose, mouth corners). The networks, the
pyramid, the box regression and the thresholds are the reference's. Parts that differ in implementation: the
non-maximum suppression (torchvision's in the reference) is written here in torch; images are resized with
OpenCV's area interpolation instead of torch's (2-3x faster on CPU; boxes move by a few percent of their size);
and ``pad=True`` gives the refinement nets black-padded crops where a box leaves the image, as the original
MTCNN does, instead of stretching the part inside. ``weights/mtcnn.pt`` holds the three state dicts, converted
once by ``scripts/convert_mtcnn_weights.py`` (licence: ``weights/LICENSE-mtcnn.txt``).

Coordinates follow the reference (boxes ``x0, y0, x1, y1`` in pixels of the input), so its outputs can be
compared number for number.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "mtcnn.pt"


class PNet(nn.Module):
    """Proposal net: fully convolutional, one 12x12 window per output cell (stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(1)  # box regression, face probability


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)  # the original (Caffe) weights' order
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), self.dense5_1(x).softmax(1)


class ONet(nn.Module):
    """Output net on 48x48 crops: box regression, five landmarks (x0..x4, y0..y4 in box units), probability."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)


NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def _suppresses(a: np.ndarray, b: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """``(len(a), len(b))`` booleans: box ``a[i]`` overlaps box ``b[j]`` by more than ``threshold`` (float32 numpy:
    the same numbers as torch's float32 ops, without their per-call cost on the ~20-box sets of most calls)."""
    one = np.float32(1.0 if mode == "min" else 0.0)
    ax0, ay0, ax1, ay1 = (c[:, None] for c in a.T)
    bx0, by0, bx1, by1 = b.T
    area_a, area_b = (ax1 - ax0 + one) * (ay1 - ay0 + one), (bx1 - bx0 + one) * (by1 - by0 + one)
    w = np.maximum(np.minimum(ax1, bx1) - np.maximum(ax0, bx0) + one, 0)
    h = np.maximum(np.minimum(ay1, by1) - np.maximum(ay0, by0) + one, 0)
    inter = w * h
    denom = np.minimum(area_a, area_b) if mode == "min" else area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return ~(inter / denom <= threshold)  # a 0/0 ratio (empty boxes) suppresses, as a NaN compare


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union",
        block: int = 1024) -> torch.Tensor:
    """Greedy non-maximum suppression: indices kept, best first.

    ``union`` drops boxes whose IoU with a kept one exceeds ``threshold`` (areas ``w*h``, as torchvision's);
    ``min`` divides the overlap by the smaller area instead (areas ``(w+1)*(h+1)``, as the reference's last step).
    The overlaps are computed a ``block`` of candidates at a time as a matrix (against the boxes kept so far and
    within the block), so the greedy pass is a loop over numpy rows: 5x faster than one torch row per kept box,
    which took a third of the time per photo at low P-Net thresholds; memory stays ``O(block * kept)``.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    order = scores.argsort(descending=True)
    ranked = boxes[order].detach().cpu().numpy()
    kept: list[int] = []  # positions in ``order``
    for start in range(0, len(ranked), block):
        cand = ranked[start:start + block]
        alive = np.ones(len(cand), dtype=bool)
        if kept:
            alive &= ~_suppresses(ranked[kept], cand, threshold, mode).any(0)
        over = _suppresses(cand, cand, threshold, mode)
        for i in np.flatnonzero(alive):
            if alive[i]:
                kept.append(start + int(i))
                alive[i + 1:] &= ~over[i, i + 1:]
    return order[torch.tensor(kept, dtype=torch.long)]


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes grown to squares around the same centre (the reference's ``rerec``)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out = boxes.clone()
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2], out[:, 3] = out[:, 0] + side, out[:, 1] + side
    return out


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Box offsets from R-Net/O-Net applied in units of the box size (the reference's ``bbreg``)."""
    w = (boxes[:, 2] - boxes[:, 0] + 1).unsqueeze(1)
    h = (boxes[:, 3] - boxes[:, 1] + 1).unsqueeze(1)
    return boxes[:, :4] + reg * torch.cat([w, h, w, h], 1)


def _normalise(pixels: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """HWC pixels (uint8 or float) (one array or a list of equal-sized ones) to the nets' NCHW input in [-1, 1],
    left in the channels-last memory order the pixels come in (the nets run channels-last, see :class:`MTCNN`)."""
    batch = np.stack(pixels) if isinstance(pixels, list) else pixels[None]
    return ((torch.from_numpy(batch).float() - 127.5) * 0.0078125).permute(0, 3, 1, 2)


def _crops(image: np.ndarray, boxes: torch.Tensor, size: int, pad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box (1-based pixel coordinates, as the reference) resized to ``size``, and which boxes gave a crop.

    ``pad=False`` takes the in-image part of the box and stretches it (facenet-pytorch); ``pad=True`` fills the
    part outside the image with black as the original MTCNN does, so a face cut by the border keeps its shape.
    """
    h, w = image.shape[:2]
    crops, valid = [], []
    for bx0, by0, bx1, by1 in boxes.trunc().int().tolist():
        x0, y0, x1, y1 = max(bx0, 1), max(by0, 1), min(bx1, w), min(by1, h)
        valid.append(y1 > y0 - 1 and x1 > x0 - 1)
        if not valid[-1]:
            continue
        part = image[y0 - 1:y1, x0 - 1:x1]
        if pad and (x0 > bx0 or y0 > by0 or x1 < bx1 or y1 < by1):  # the box leaves the image
            part = cv2.copyMakeBorder(part, y0 - by0, by1 - y1, x0 - bx0, bx1 - x1, cv2.BORDER_CONSTANT, value=0)
        crops.append(cv2.resize(part, (size, size), interpolation=cv2.INTER_AREA))
    data = _normalise(crops) if crops else torch.zeros(0, 3, size, size)
    return data, torch.tensor(valid, dtype=torch.bool)


class MTCNN(nn.Module):
    """The three-stage cascade on one RGB image; ``min_face_size`` in pixels sets the pyramid's first scale."""

    def __init__(self, min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, pad: bool = False, weights: str | Path = WEIGHTS,
                 large_windows: tuple[int, float] | None = None) -> None:
        """``large_windows=(side, threshold)``: P-Net's threshold on the pyramid levels whose windows are at
        least ``side`` px of the input (coarse levels have few windows, so a lower threshold there costs little);
        None: ``thresholds[0]`` everywhere, as the reference."""
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        for name in NETS:
            getattr(self, name).load_state_dict(state[name])
        self.min_face_size, self.thresholds, self.factor, self.pad = min_face_size, thresholds, factor, pad
        self.large_windows = large_windows
        # Channels-last convolutions and max-pools: 70 -> 38 ms per 1280x720 photo on 2 idle cores, same boxes
        # within 2.5e-4 px (the 2x2 ceil-mode max-pool alone is 4x faster than in NCHW).
        self.to(memory_format=torch.channels_last)
        self.eval()

    def _scales(self, h: int, w: int, min_face_size: int) -> list[float]:
        scale, side, scales = 12.0 / min_face_size, min(h, w) * 12.0 / min_face_size, []
        while side >= 12:
            scales.append(scale)
            scale, side = scale * self.factor, side * self.factor
        return scales

    def _propose(self, image: np.ndarray, min_face_size: int) -> torch.Tensor:
        """Stage 1: P-Net windows over the pyramid, as rows ``x0, y0, x1, y1, score``. The pyramid is resized
        from the uint8 photo (about 3x faster than from float pixels; the levels round to whole grey values)."""
        h, w = image.shape[:2]
        found = []
        level = image
        for scale in self._scales(h, w, min_face_size):
            size = (int(w * scale + 1), int(h * scale + 1))
            level = cv2.resize(level, size, interpolation=cv2.INTER_LINEAR)  # each level from the one before
            reg, prob = self.pnet(_normalise(level))
            threshold = self.thresholds[0]
            if self.large_windows is not None and 12.0 / scale >= self.large_windows[0]:
                threshold = self.large_windows[1]
            cells = (prob[0, 1] >= threshold).nonzero()
            if not len(cells):
                continue
            score = prob[0, 1][cells[:, 0], cells[:, 1]]
            offsets = reg[0][:, cells[:, 0], cells[:, 1]].T
            yx = cells.float().flip(1)
            q0 = ((2 * yx + 1) / scale).floor()
            q1 = ((2 * yx + 12) / scale).floor()
            rows = torch.cat([q0, q1, score[:, None], offsets], 1)
            found.append(rows[nms(rows[:, :4], rows[:, 4], 0.5)])
        if not found:
            return torch.zeros(0, 5)
        rows = torch.cat(found)
        rows = rows[nms(rows[:, :4], rows[:, 4], 0.7)]
        size = torch.cat([rows[:, 2:3] - rows[:, 0:1], rows[:, 3:4] - rows[:, 1:2]] * 2, 1)
        boxes = rows[:, :4] + rows[:, 5:9] * size
        return torch.cat([_square(boxes), rows[:, 4:5]], 1)

    @torch.inference_mode()
    def rescore(self, rgb: np.ndarray, centres: np.ndarray, sides: np.ndarray, angles: np.ndarray) -> np.ndarray:
        """O-Net's face probabilities ``(N,)`` for square crops of an ``(H, W, 3)`` uint8 RGB array around
        ``centres`` ``(N, 2)``, ``sides`` ``(N,)`` px wide, each cut after turning the image by ``angles`` degrees
        (counter-clockwise, as OpenCV) about its centre; grey where a crop leaves the image. For checking a
        face in the frame of its own eyes."""
        crops = []
        for (cx, cy), side, angle in zip(centres, sides, angles, strict=True):
            n = max(2, int(round(side)))
            matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), float(angle), 1.0)
            matrix[:, 2] += n / 2 - cx, n / 2 - cy
            crop = cv2.warpAffine(rgb, matrix, (n, n), flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
            crops.append(cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA))
        if not crops:
            return np.zeros(0)
        return self.onet(_normalise(crops))[2][:, 1].double().numpy()

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray, min_face_size: int | None = None,
               keep_proposals: Callable[[np.ndarray], np.ndarray] | None = None,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``(N, 4)`` as x0, y0, x1, y1, probabilities ``(N,)`` and landmarks ``(N, 5, 2)`` (x, y) of an
        ``(H, W, 3)`` uint8 RGB array; the eyes are landmarks 0 and 1. ``min_face_size`` overrides the
        smallest face searched (px) for this call. ``keep_proposals`` maps P-Net's proposals' centres ``(N, 2)``
        (x, y in pixels of ``rgb``) to booleans, and the others are dropped before R-Net: R-Net's and O-Net's cost
        grows with the proposals, so a search can leave out places it has settled already."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"MTCNN expects an (H, W, 3) RGB array, got shape {rgb.shape}")
        pixels = np.ascontiguousarray(rgb, dtype=np.uint8)
        empty = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        boxes = self._propose(pixels, min_face_size or self.min_face_size)
        if len(boxes) and keep_proposals is not None:
            centres = ((boxes[:, :2] + boxes[:, 2:4]) / 2).double().numpy()
            boxes = boxes[torch.from_numpy(np.asarray(keep_proposals(centres), dtype=bool))]
        if not len(boxes):
            return empty
        # Stage 2: R-Net rescoring and refinement.
        image = pixels.astype(np.float32)  # the reference crops float pixels
        data, valid = _crops(image, boxes[:, :4], 24, self.pad)
        boxes = boxes[valid]
        reg, prob = self.rnet(data)
        keep = prob[:, 1] > self.thresholds[1]
        boxes = torch.cat([boxes[keep, :4], prob[keep, 1:2]], 1)
        reg = reg[keep]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = torch.cat([_square(_regress(boxes[pick], reg[pick])), boxes[pick, 4:5]], 1)
        if not len(boxes):
            return empty
        # Stage 3: O-Net rescoring, landmarks and final refinement.
        data, valid = _crops(image, boxes[:, :4], 48, self.pad)
        boxes = boxes[valid]
        reg, marks, prob = self.onet(data)
        keep = prob[:, 1] > self.thresholds[2]
        boxes, reg, marks, score = boxes[keep, :4], reg[keep], marks[keep], prob[keep, 1]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points = torch.stack([w * marks[:, :5] + boxes[:, 0:1] - 1, h * marks[:, 5:] + boxes[:, 1:2] - 1], 2)
        boxes = _regress(boxes, reg)
        pick = nms(boxes, score, 0.7, mode="min")
        return boxes[pick].double().numpy(), score[pick].double().numpy(), points[pick].double().numpy()
