"""``facial-emotion-recognition`` (Rayyan Akhtar's package; a four-convolution network at 48x48 grey, PyTorch, with
facenet-pytorch's MTCNN) for ``benchmarks/peers.py``.

The package's weights are a pickle saved from a GPU, so ``EmotionRecognition()`` cannot load them on a CPU-only
machine; the runner maps them to the CPU while the constructor runs (``torch.load(..., map_location="cpu")``).

- ``pipeline``: the steps of ``EmotionRecognition.recognise_emotion(bgr_frame)``, which only draws its answer on
  the frame: MTCNN on the frame (passed as the package passes it, BGR), every box cut from the grey frame and
  classified with ``_predict``; the largest face's label. A box the package cannot cut (it does not clip boxes
  reaching outside the frame) raises there, and is recorded as that image's error.
- ``crop``: ``_predict`` on the whole grey image (resize to 48x48, normalised to [-1, 1]).
"""

from __future__ import annotations

from _protocol import evaluate, finish, largest, main


def run(request: dict) -> None:
    import functools
    from importlib.metadata import version

    import cv2
    import numpy as np
    import torch
    from facial_emotion_recognition import EmotionRecognition

    torch.set_num_threads(int(request["threads"]))
    cv2.setNumThreads(int(request["threads"]))
    load = torch.load
    torch.load = functools.partial(load, map_location="cpu")
    try:
        er = EmotionRecognition(device="cpu")
    finally:
        torch.load = load

    @torch.no_grad()
    def pipeline(bgr: np.ndarray) -> tuple[str | None, int]:
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        boxes, _ = er.mtcnn.detect(bgr)
        if boxes is None:
            return None, 0
        found = []
        for box in boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
            found.append(((x2 - x1) * (y2 - y1), er._predict(grey[y1:y2, x1:x2])))
        return largest(found, lambda f: f[0])[1], len(found)

    @torch.no_grad()
    def crop(bgr: np.ndarray) -> tuple[str | None, int]:
        return er._predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)), 1

    modes = {}
    for mode, paths in request["modes"].items():
        modes[mode] = evaluate(paths, cv2.imread, {"pipeline": pipeline, "crop": crop}[mode])
    finish(version("facial-emotion-recognition"), [er.emotions[i] for i in sorted(er.emotions)], modes,
           "facenet-pytorch MTCNN detector")


if __name__ == "__main__":
    main(run)
