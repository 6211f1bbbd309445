"""Stored outputs of the independent implementations our ports must match: torchvision's ResNet-18 (the trunk) and
facenet-pytorch's MTCNN (the in-package detector).

Neither package is a dependency (torchvision pulls a CUDA build of torch; facenet-pytorch pins an old torch), so the
suite compares against their outputs stored in ``tests/data/``. The inputs and the ResNet weights are derived here
from fixed seeds, so a test rebuilds them exactly; MTCNN's weights are facenet-pytorch's own, the ones converted
into ``fdrl/weights/mtcnn.pt``. Regenerate (where both packages are installed, e.g. a separate venv with
``pip install torch torchvision requests tqdm && pip install --no-deps facenet-pytorch``)::

    python tests/parity_reference.py          # rewrites tests/data/torchvision_resnet18.npz, facenet_mtcnn.npz

Where the packages are installed, ``test_model.py`` and ``test_mtcnn.py`` also compare against them live.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parent / "data"
TORCHVISION_FILE = DATA / "torchvision_resnet18.npz"
FACENET_FILE = DATA / "facenet_mtcnn.npz"
NET_INPUTS = {"pnet": (2, 3, 40, 56), "rnet": (5, 3, 24, 24), "onet": (5, 3, 48, 48)}
FER_PHOTO = {"count": 5, "start": 3, "side": 120}  # test_mtcnn's photo of real FER2013 faces (shared data)


def seeded_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Deterministic ResNet weights for ``shapes`` (key order = sorted names): He-scaled convolutions and linear
    layers, batch-norm statistics near identity, so activations stay O(1) through all stages."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=torch.long)
        elif len(shape) > 1:
            state[name] = torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
        elif name.endswith(("running_var", "weight")):  # the 1-d weights are batch-norm scales
            state[name] = 1.0 + 0.1 * torch.rand(shape, generator=g)
        else:  # biases and running means
            state[name] = 0.1 * torch.randn(shape, generator=g)
    return state


def trunk_input() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def net_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {name: torch.randn(shape, generator=g) for name, shape in NET_INPUTS.items()}


def hopper() -> np.ndarray:
    """A real portrait that needs no data set: matplotlib's sample photo of Grace Hopper (RGB, 512x600)."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return dict(z)


def _make_torchvision() -> None:
    import torchvision

    ref = torchvision.models.resnet18(weights=None).eval()
    ref.fc = torch.nn.Identity()
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ref.load_state_dict(seeded_state(shapes), strict=True)
    with torch.no_grad():
        out = ref(trunk_input())
    np.savez_compressed(TORCHVISION_FILE, output=out.numpy(), keys=np.array(sorted(shapes)),
                        versions=np.array([f"torch {torch.__version__}", f"torchvision {torchvision.__version__}"]))


def _make_facenet() -> None:
    from importlib.metadata import version

    from facenet_pytorch.models import mtcnn as ref

    arrays = {}
    with torch.no_grad():
        for (name, x), cls in zip(net_inputs().items(), (ref.PNet, ref.RNet, ref.ONet), strict=True):
            for i, y in enumerate(cls().eval()(x)):  # each net loads facenet-pytorch's own weights
                arrays[f"{name}_{i}"] = y.numpy()
    detector = ref.MTCNN(keep_all=True)
    for key, photo in (("hopper", hopper()), ("fer", _fer_photo())):
        if photo is None:
            print(f"no shared data: the {key} photo's reference is left out", file=sys.stderr)
            continue
        boxes, probs, points = detector.detect(photo, landmarks=True)
        arrays.update({f"{key}_boxes": np.asarray(boxes, float), f"{key}_probs": np.asarray(probs, float),
                       f"{key}_points": np.asarray(points, float)})
    arrays["versions"] = np.array([f"torch {torch.__version__}", f"facenet-pytorch {version('facenet-pytorch')}"])
    np.savez_compressed(FACENET_FILE, **arrays)


def _fer_photo():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_mtcnn import _fer_faces, _photo

    try:
        faces = _fer_faces(FER_PHOTO["count"], start=FER_PHOTO["start"])
    except BaseException:  # noqa: BLE001  (shared() skips through pytest's exception without the data)
        return None
    return _photo(faces, FER_PHOTO["side"])[0]


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    _make_torchvision()
    _make_facenet()
    for path in (TORCHVISION_FILE, FACENET_FILE):
        print(path, path.stat().st_size, "bytes", list(load(path)["versions"]))
