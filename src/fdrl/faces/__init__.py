"""Face detection and crop/alignment, offline: one package below both ``data/`` (training crops) and
``inference/`` (``fdrl predict``), so both crop a face the same way.

Backends, by name in :data:`DETECTORS` (:mod:`.registry`), one module each, all working without a network
connection:

- ``opencv`` (:mod:`.opencv`): OpenCV's bundled Haar cascade; eyes from the bundled Haar eye cascade.
- ``dlib`` (:mod:`.dlib_hog`): dlib's HOG frontal-face detector; more robust to lighting than Haar.
- ``mtcnn`` (:mod:`.facenet`): MTCNN from facenet-pytorch; five landmarks per face. Needs torchvision.
- ``mtcnn_lite`` (default, :data:`DEFAULT_DETECTOR`; :mod:`.mtcnn_lite`): the same MTCNN ported to this package
  (:mod:`.mtcnn`, weights shipped in ``weights/mtcnn.pt``, no torchvision); five landmarks per face.
- ``mtcnn_lite_tilted``: ``mtcnn_lite`` plus a search of the photo turned by +-45 degrees for tilted faces.
- ``none`` (:mod:`.whole`): the whole image is one face (already-cropped inputs).

Every backend returns the faces largest first; eye centres, when found, drive the rotation alignment in
:func:`crop_face` (:mod:`.crop`).
"""

from .base import DEFAULT_MARGIN, Detector, Face
from .crop import FaceCropper, crop_face
from .registry import DEFAULT_DETECTOR, DETECTORS, check_detector_name, create_detector

__all__ = ["DEFAULT_DETECTOR", "DEFAULT_MARGIN", "DETECTORS", "Detector", "Face", "FaceCropper",
           "check_detector_name", "create_detector", "crop_face"]
