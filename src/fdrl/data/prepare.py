"""``fdrl prepare``: detect, align and crop the faces of a raw image folder into a training-ready folder.

The class-folder structure of ``src`` is kept (``src/<class>/x.jpg`` -> ``dst/<class>/x.png``), so the result
loads with the ``folder`` data set. Images without a face, and unreadable ones, are listed in
``dst/prepare_report.csv`` and counted on stdout; nothing is dropped silently.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from PIL import Image

from ..errors import DataError, ImageReadError
from ..faces import DEFAULT_MARGIN, create_detector, crop_face
from ..media import IMAGE_EXTENSIONS, read_image


def prepare_folder(src: str | Path, dst: str | Path, size: int = 224, detector: str = "opencv",
                   margin: float = DEFAULT_MARGIN) -> Counter:
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"prepare: source folder {src} does not exist")
    det = create_detector(detector)
    counts: Counter = Counter()
    dst.mkdir(parents=True, exist_ok=True)
    with (dst / "prepare_report.csv").open("w", newline="") as fh:
        report = csv.writer(fh)
        report.writerow(["source", "status", "faces", "output"])
        for path in sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
            rel = path.relative_to(src)
            try:
                image = read_image(path)
            except ImageReadError as exc:
                counts["unreadable"] += 1
                report.writerow([rel, f"unreadable: {exc}", 0, ""])
                continue
            faces = det.detect(image)
            if not faces:
                counts["no_face"] += 1
                report.writerow([rel, "no_face", 0, ""])
                continue
            face = faces[0]  # the largest face
            crop = crop_face(image, face, margin).resize((size, size), Image.BILINEAR)
            out = dst / rel.with_suffix(".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            crop.save(out)
            counts["ok"] += 1
            counts["aligned"] += face.eyes is not None
            report.writerow([rel, "ok", len(faces), out.relative_to(dst)])
    return counts
