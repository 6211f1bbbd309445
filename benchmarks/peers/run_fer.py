"""``fer`` (Justin Shenk's package; mini-Xception trained on FER2013, shipped as a quantised TFLite file) for
``benchmarks/peers.py``.

- ``pipeline``: ``FER().detect_emotions(bgr_image)`` with the package's defaults (OpenCV Haar cascade, smallest face
  50 px, boxes squared and widened by 10 px, the TFLite model); the largest face's top emotion, as ``top_emotion``
  reads it (scores rounded to 2 decimals by the package, ties to the first label).
- ``crop``: the same classifier on the whole image as the face: grey, resized to the model's 64x64 input (OpenCV
  bilinear), scaled to [-1, 1], which is what ``detect_emotions`` does to each face box; through the package's own
  ``FER._classify_emotions`` (the public call offers no way to skip the widening of the box).
"""

from __future__ import annotations

from _protocol import evaluate, finish, largest, main


def run(request: dict) -> None:
    from importlib.metadata import version

    import cv2
    import numpy as np
    from fer.fer import FER  # 25.10.3 no longer exports FER from the package (its README still imports it so)

    cv2.setNumThreads(int(request["threads"]))
    fer = FER()
    names = FER._get_labels()
    size = fer._FER__emotion_target_size  # the model's input side, read by the package from the model file

    def pipeline(bgr: np.ndarray) -> tuple[str | None, int]:
        faces = fer.detect_emotions(bgr)
        face = largest(faces, lambda f: f["box"][2] * f["box"][3])
        return (None if face is None else max(face["emotions"], key=face["emotions"].get)), len(faces)

    def crop(bgr: np.ndarray) -> tuple[str | None, int]:
        grey = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), size).astype("float32")
        scores = fer._classify_emotions(((grey / 255.0 - 0.5) * 2.0)[None])
        return names[int(np.argmax(scores[0]))], 1

    modes = {}
    for mode, paths in request["modes"].items():
        modes[mode] = evaluate(paths, cv2.imread, {"pipeline": pipeline, "crop": crop}[mode])
    finish(version("fer"), [names[i] for i in sorted(names)], modes,
           "TFLite model (the package default), Haar cascade detector")


if __name__ == "__main__":
    main(run)
