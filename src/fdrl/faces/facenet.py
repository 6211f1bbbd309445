"""``mtcnn``: MTCNN from facenet-pytorch (its weights ship inside that package; needs torchvision); five
landmarks per face, so the eyes come from the detector itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DetectorError
from .base import Face, cascade_faces

if TYPE_CHECKING:
    from PIL import Image


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
        return cascade_faces(boxes, probs, points, self.threshold, self.align, image.width, image.height)
