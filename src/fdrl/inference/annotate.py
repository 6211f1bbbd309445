"""Faces drawn on a photo: boxes and their top labels, placed so that no label covers another; and where
annotated copies of many photos go."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from PIL import Image

from ..media import read_image
from .results import FaceResult, PredictionResult


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


def annotated_names(image_ids: list[str]) -> dict[str, Path]:
    """Output names for annotated images: each file's path relative to the folder that holds them all, stem +
    ``_annotated.jpg``, so ``col/happy/001.png`` and ``col/sad/001.png`` become ``happy/001_annotated.jpg`` and
    ``sad/001_annotated.jpg`` instead of overwriting each other; files that share a folder and a stem
    (``a.png``, ``a.jpg``) keep their extension in the name (``a_png_annotated.jpg``)."""
    full = {i: Path(os.path.abspath(i)) for i in image_ids}  # abspath, not resolve: a link keeps its own name
    if not full:
        return {}
    root = Path(os.path.commonpath(sorted({str(p.parent) for p in full.values()})))
    stems = Counter(p.with_suffix("") for p in full.values())
    names: dict[str, Path] = {}
    taken: set[Path] = set()
    for i, p in full.items():
        base = p.relative_to(root).with_name(p.name.replace(".", "_") if stems[p.with_suffix("")] > 1 else p.stem)
        name, k = base.with_name(base.name + "_annotated.jpg"), 1
        while name in taken:  # a.png, a.jpg and a_png.bmp: the last one would take a_png's name
            k += 1
            name = base.with_name(f"{base.name}_{k}_annotated.jpg")
        names[i] = name
        taken.add(name)
    return names


def save_annotated(result: PredictionResult, out_dir: Path) -> None:
    """Each readable photo of ``result`` with its faces drawn, under :func:`annotated_names` in ``out_dir``."""
    by_image: dict[str, list] = {}
    for f in result.faces:
        by_image.setdefault(f.image_id, []).append(f)
    readable = [s.image_id for s in result.images if not s.status.startswith("unreadable")]
    for image_id, name in annotated_names(readable).items():
        img = annotate(read_image(image_id), by_image.get(image_id, []))
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(out_dir / name, quality=92)
