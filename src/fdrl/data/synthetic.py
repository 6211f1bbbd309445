"""A generated, deterministic expression data set: the embedded default and the test fixture.

Drawn faces whose 7 classes differ in *shared* facial actions (mouth opening and curvature, brow angle and
height, eye openness) — the premise of FDRL is that such actions recur across expressions — under nuisance
variation (face shape, skin tone, pose, scale, lighting gradient, noise). Every image is a pure function of
(seed, split, index), so the set is identical across runs and machines; nothing is shipped or downloaded.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .base import FERDataset, Sample

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Facial actions per class: mouth_open, mouth_curve (+smile), brow_angle (+inner ends down = frown),
# brow_raise, eye_open, lip_asym. Shared actions on purpose: open mouth in fear/surprise/happy,
# frowning brows in angry/disgust, closed-ish eyes in happy/sad/disgust.
ACTIONS = {
    "angry": (0.05, -0.2, 0.9, -0.3, 0.6, 0.0),
    "disgust": (0.15, -0.5, 0.5, -0.2, 0.45, 0.8),
    "fear": (0.45, -0.3, -0.6, 0.7, 1.0, 0.0),
    "happy": (0.35, 0.9, 0.0, 0.1, 0.5, 0.0),
    "sad": (0.0, -0.8, -0.7, 0.2, 0.45, 0.0),
    "surprise": (0.9, 0.0, 0.0, 1.0, 1.0, 0.0),
    "neutral": (0.0, 0.0, 0.0, 0.0, 0.75, 0.0),
}
SPLIT_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def draw_face(rng: np.random.Generator, label: int, size: int = 48) -> np.ndarray:
    """One RGB uint8 face of class ``label`` drawn at 4x then downsampled (anti-aliasing)."""
    s = size * 4
    mo, mc, ba, br, eo, asym = ACTIONS[CLASSES[label]]
    k = rng.uniform(0.75, 1.0)  # expression intensity
    jit = lambda v, sd=0.06: v * k + rng.normal(0, sd)  # noqa: E731
    mo, mc, ba, br = jit(mo), jit(mc), jit(ba), jit(br)
    eo = float(np.clip(eo + rng.normal(0, 0.1), 0.1, 1.1))
    bg = tuple(int(v) for v in rng.integers(20, 235, 3))
    img = Image.new("RGB", (s, s), bg)
    d = ImageDraw.Draw(img)
    cx, cy = s / 2 + rng.normal(0, s * 0.03), s / 2 + rng.normal(0, s * 0.03)
    fw, fh = s * rng.uniform(0.30, 0.40), s * rng.uniform(0.38, 0.47)
    tone = rng.uniform(0.35, 1.0)
    skin = tuple(int(c * tone) for c in (235, 195, 160))
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    dark = tuple(int(c * 0.25) for c in skin)
    ex, ey = fw * rng.uniform(0.38, 0.5), cy - fh * rng.uniform(0.15, 0.3)
    er = fw * rng.uniform(0.14, 0.2)
    for side in (-1, 1):
        x = cx + side * ex
        d.ellipse([x - er, ey - er * eo * 0.8, x + er, ey + er * eo * 0.8], fill=(250, 250, 250))
        pr = er * 0.45 * min(1.0, eo + 0.2)
        d.ellipse([x - pr, ey - pr * 0.9, x + pr, ey + pr * 0.9], fill=dark)
        by = ey - er * (1.6 + 0.9 * br)
        inner, outer = x - side * er * 1.1, x + side * er * 1.3
        w = max(3, int(s * 0.04))
        d.line([(inner, by + ba * er * 0.9), (outer, by - ba * er * 0.3)], fill=dark, width=w)
    my, mw = cy + fh * rng.uniform(0.45, 0.6), fw * rng.uniform(0.4, 0.55)
    curve, open_h = mc * fh * 0.15, max(0.0, mo) * fh * 0.3
    xs = np.linspace(-1, 1, 24)
    # mouth corners lift with a smile (curve > 0) and drop with a frown
    top = [(cx + mw * x, my - curve * (x * x) + asym * x * fh * 0.06) for x in xs]
    bottom = [(cx + mw * x, my - curve * (x * x) + open_h * (1 - x * x) + 2) for x in xs[::-1]]
    d.polygon(top + bottom, fill=(90, 20, 30))
    d.line(top, fill=(120, 30, 40), width=max(2, int(s * 0.02)))
    angle = rng.normal(0, 8)
    scale = rng.uniform(0.85, 1.1)
    img = img.rotate(angle, resample=Image.BILINEAR, fillcolor=bg)
    if scale != 1.0:
        ns = int(s * scale)
        img2 = img.resize((ns, ns), Image.BILINEAR)
        canvas = Image.new("RGB", (s, s), bg)
        canvas.paste(img2, ((s - ns) // 2, (s - ns) // 2))
        img = canvas
    arr = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size
    light = 1 + rng.uniform(-0.35, 0.35) * (xx - 0.5) + rng.uniform(-0.25, 0.25) * (yy - 0.5)
    arr = arr * light[..., None] * rng.uniform(0.7, 1.2) + rng.normal(0, rng.uniform(2, 10), arr.shape)
    return arr.clip(0, 255).astype(np.uint8)


def synthetic_samples(split: str, num_samples: int, image_size: int, seed: int) -> list[Sample]:
    if split not in SPLIT_OFFSET:
        raise ValueError(f"synthetic: split must be one of {sorted(SPLIT_OFFSET)}, got {split!r}")
    out = []
    for i in range(num_samples):
        rng = np.random.default_rng([seed, SPLIT_OFFSET[split] + i])
        label = i % len(CLASSES)
        out.append(Sample(id=f"synthetic/{split}/{i:06d}", label=label, pixels=draw_face(rng, label, image_size),
                          subject=f"id{i}"))
    return out


def build_synthetic(root: str | None, split: str, on_error: str = "skip", num_samples: int | None = None,
                    image_size: int = 48, seed: int = 0, train_size: int = 2100, eval_size: int = 700) -> FERDataset:
    """``train`` has ``train_size`` faces, ``val`` and ``test`` ``eval_size`` each (balanced classes)."""
    n = num_samples if num_samples is not None else (train_size if split == "train" else eval_size)
    return FERDataset("synthetic", split, CLASSES, synthetic_samples(split, n, image_size, seed), on_error=on_error)
