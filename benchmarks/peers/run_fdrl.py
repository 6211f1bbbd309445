"""fdrl (the default packaged model through ``fdrl.Recognizer``) for ``benchmarks/peers.py``, run with the
benchmark's own interpreter.

- ``pipeline``: ``Recognizer().predict_images`` on the decoded images in batches: the default face detector, the
  face cut with the checkpoint's margin; the largest face's label.
- ``crop``: the same model with ``detector="none"``: the whole image is the face, preprocessed as the checkpoint
  says (what ``predict_tensor`` does for a batch of crops of one size).

Each mode twice: test-time augmentation ``none`` (single crop) and ``flip`` (the default of ``Recognizer``).
"""

from __future__ import annotations

from _protocol import evaluate, finish, largest, main

TTA = ("none", "flip")


def run(request: dict) -> None:
    from pathlib import Path

    import torch

    import fdrl
    from fdrl.faces import create_detector
    from fdrl.media import read_image

    torch.set_num_threads(int(request["threads"]))
    rec = fdrl.Recognizer()
    detectors = {"pipeline": rec.detector, "crop": create_detector("none")}

    def predict_batch(images: list) -> list[tuple[str | None, int]]:
        res = rec.predict_images((str(i), im) for i, im in enumerate(images))
        out = []
        for i in range(len(images)):
            faces = [f for f in res.faces if f.image_id == str(i)]
            face = largest(faces, lambda f: f.box[2] * f.box[3])
            out.append((None if face is None else face.label, len(faces)))
        return out

    modes = {}
    for mode, paths in request["modes"].items():
        rec.detector = detectors[mode]
        for tta in TTA:
            rec.tta = tta
            name = mode if tta == "none" else f"{mode}+{tta}"
            modes[name] = evaluate(paths, read_image, predict_batch=predict_batch, batch=int(request["batch"]))
    finish(f"{fdrl.__version__} ({Path(rec.checkpoint).name})", rec.classes, modes,
           f"detector {detectors['pipeline'].name}; batches of {request['batch']}; default tta flip")


if __name__ == "__main__":
    main(run)
