"""``what-the-face-classification`` (a three-convolution network at 48x48 grey, PyTorch) for
``benchmarks/peers.py``.

- ``pipeline``: ``Image_classifier().predict(pil_image)``, the package's call: an OpenCV Haar cascade
  (``detectMultiScale(image, 1.3, 5)``) crops its first face; when it finds none the whole image is classified
  and the package answers ``"no face detected"`` only if the top probability is below 0.6. That answer is this
  benchmark's "no face"; a face count is not exposed, so an answer counts as one face.
- ``crop``: the package's network on the whole image through its own transform (resize and centre crop to 48,
  grey, [0, 1]), as ``predict`` does after cropping.
"""

from __future__ import annotations

from _protocol import evaluate, finish, main

NO_FACE = "no face detected"


def run(request: dict) -> None:
    from importlib.metadata import version

    import torch
    from PIL import Image
    from what_the_face_classification.inference import Image_classifier

    torch.set_num_threads(int(request["threads"]))
    clf = Image_classifier()
    clf.net.eval()

    def load(path: str) -> Image.Image:
        with Image.open(path) as im:
            im.load()
            return im

    def pipeline(image: Image.Image) -> tuple[str | None, int]:
        label, _ = clf.predict(image)
        return (None, 0) if label == NO_FACE else (label, 1)

    @torch.no_grad()
    def crop(image: Image.Image) -> tuple[str | None, int]:
        logits = clf.net(clf.transform(image).float().unsqueeze(0))
        return clf.classes[int(logits.argmax(1))], 1

    modes = {}
    for mode, paths in request["modes"].items():
        modes[mode] = evaluate(paths, load, {"pipeline": pipeline, "crop": crop}[mode])
    finish(version("what-the-face-classification"), list(clf.classes), modes,
           "Haar cascade detector; no face: the package's 'no face detected' answer")


if __name__ == "__main__":
    main(run)
