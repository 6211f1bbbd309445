"""Faces drawn on a photo: boxes and their top labels, placed so that no label covers another."""

from __future__ import annotations

from PIL import Image

from .results import FaceResult


def annotate(image: Image.Image, faces: list[FaceResult], top: int = 3) -> Image.Image:
    """Boxes and top-``top`` labels drawn on a copy of ``image``; labels never cover each other
    (:func:`fdrl.inference.labels.place_labels`)."""
    from PIL import ImageDraw

    from .labels import place_labels

    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    lw = max(2, out.width // 300)
    lines = [[f"{c} {p:.2f}" for c, p in sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:top]]
             for f in faces]
    spots = place_labels([f.box for f in faces], [(7 * max(map(len, t), default=0), 12 * len(t)) for t in lines],
                         out.size)
    for f in faces:
        x, y, w, h = f.box
        d.rectangle([x, y, x + w, y + h], outline=(0, 255, 0), width=lw)
    for texts, (lx, ly, rx, _) in zip(lines, spots, strict=True):
        for i, text in enumerate(texts):
            ty = ly + i * 12
            d.rectangle([lx, ty, rx - 1, ty + 11], fill=(0, 0, 0))
            d.text((lx + 1, ty), text, fill=(255, 255, 0) if i == 0 else (255, 255, 255))
    return out
