from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
