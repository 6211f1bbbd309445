from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fdrl
from fdrl.checkpoint import atomic_save, make_checkpoint
from fdrl.config import Preprocessing

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # FER2013 order; the tiny ckpt

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_image(path: Path, size=(48, 48), seed: int = 0, mode: str = "RGB", fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format=fmt)
    return path


@pytest.fixture
def img():
    return write_image


def shared(name: str) -> Path:
    p = SHARED_DATA / name
    if not p.is_dir():
        pytest.skip(f"{p} not present (real data is only on the development machines)")
    return p


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random-weight FDRL checkpoint (M=3, 40 px grayscale) for inference and export tests."""
    torch.manual_seed(0)
    model = fdrl.create_model("fdrl_resnet18", num_classes=7, num_latent=3, alpha_reduce="mean").eval()
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    atomic_save(make_checkpoint(model, CLASSES, Preprocessing(input_size=40, grayscale=True)), path)
    return path
