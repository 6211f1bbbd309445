"""``facex`` (Hasby Fahrudin's package; a TFLite classifier at 200x200) for ``benchmarks/peers.py``.

- ``pipeline``: ``PoolManager(pool_size=1).predict(bgr_image)``, the package's documented call (OpenCV Haar cascade,
  ``detectMultiScale(grey, 1.1, 4)``, each grey face box classified); the largest face's top emotion.
- ``crop``: ``EmotionClassifier.detect_emotion`` on the whole grey image, which is how ``predict`` classifies each
  grey face box (scikit-image resize to 200x200x3, values in [0, 1]).
"""

from __future__ import annotations

from _protocol import evaluate, finish, largest, main


def run(request: dict) -> None:
    from importlib.metadata import version

    import cv2
    import numpy as np
    from facex import PoolManager

    cv2.setNumThreads(int(request["threads"]))
    pool = PoolManager(pool_size=1)
    classifier = pool.pool[0]

    def top(scores: dict) -> str:
        return max(scores, key=scores.get)

    def pipeline(bgr: np.ndarray) -> tuple[str | None, int]:
        faces = pool.predict(bgr)
        face = largest(faces, lambda f: f["bbox"][2] * f["bbox"][3])
        return (None if face is None else top(face["emot"])), len(faces)

    def crop(bgr: np.ndarray) -> tuple[str | None, int]:
        return top(classifier.detect_emotion(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))), 1

    modes = {}
    for mode, paths in request["modes"].items():
        modes[mode] = evaluate(paths, cv2.imread, {"pipeline": pipeline, "crop": crop}[mode])
    pool.shutdown()
    finish(version("facex"), list(classifier.category), modes, "TFLite model, Haar cascade detector")


if __name__ == "__main__":
    main(run)
