"""What a recognition returns: one record per face, a status per input image, and their table/JSON forms."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FaceResult:
    image_id: str
    face_index: int
    box: tuple[int, int, int, int]
    score: float
    label: str
    confidence: float
    probabilities: dict[str, float]
    alpha: list[float] | None = None
    frame: int | None = None


@dataclass
class ImageStatus:
    image_id: str
    status: str  # "ok", "whole_image", "no_face", "unreadable: <reason>"
    faces: int = 0


@dataclass
class PredictionResult:
    faces: list[FaceResult] = field(default_factory=list)
    images: list[ImageStatus] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    COLUMNS = ("image_id", "frame", "face_index", "status", "x", "y", "w", "h", "score", "label", "confidence")

    @property
    def failed(self) -> list[ImageStatus]:
        return [s for s in self.images if s.status.startswith("unreadable")]

    def rows(self) -> list[dict[str, Any]]:
        """One row per face, plus one row for each image without a face or unreadable (fixed columns)."""
        status = {s.image_id: s.status for s in self.images}
        rows = []
        for f in self.faces:
            row = {"image_id": f.image_id, "frame": f.frame, "face_index": f.face_index,
                   "status": status.get(f.image_id, "ok"), "x": f.box[0], "y": f.box[1], "w": f.box[2],
                   "h": f.box[3], "score": round(f.score, 4), "label": f.label, "confidence": round(f.confidence, 4)}
            row.update({f"p_{c}": round(f.probabilities[c], 5) for c in self.classes})
            if f.alpha is not None:
                row.update({f"alpha_{j + 1}": round(a, 5) for j, a in enumerate(f.alpha)})
            rows.append(row)
        for s in self.images:
            if s.faces == 0:
                rows.append({k: None for k in self.COLUMNS} | {"image_id": s.image_id, "status": s.status})
        return rows

    def to_pandas(self):
        import pandas as pd

        cols = list(self.COLUMNS) + [f"p_{c}" for c in self.classes]
        rows = self.rows()
        extra = sorted({k for r in rows for k in r if k.startswith("alpha_")}, key=lambda k: int(k.split("_")[1]))
        return pd.DataFrame(rows, columns=cols + extra)

    def to_json(self) -> str:
        return json.dumps({"classes": self.classes, "images": [asdict(s) for s in self.images],
                           "faces": [asdict(f) for f in self.faces]}, indent=2)


def render(result: PredictionResult, fmt: str) -> str:
    """``result`` as ``fdrl predict --format`` writes it: ``json``, ``csv`` (one row per face) or an aligned
    ``table`` of the main columns."""
    if fmt == "json":
        return result.to_json()
    rows = result.rows()
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")  # the csv module's default is CRLF
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    show = [c for c in ("image_id", "frame", "face_index", "status", "x", "y", "w", "h", "score", "label",
                        "confidence") if c in cols]
    show += [c for c in cols if c.startswith("p_")]
    table = [[("" if r.get(c) is None else str(r.get(c))) for c in show] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in table]) for i, c in enumerate(show)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(show, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in table]
    return "\n".join(lines) + "\n"
