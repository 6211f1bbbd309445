"""Where each face's label block goes in an annotated image, so that no label covers another (pure geometry).

A label goes below its face box if that spot is inside the image and free, else above, else at the free spot
nearest to its box (scanning rows, then columns); only when the image has no free spot left does it go below the
box regardless. Rectangles are ``(x0, y0, x1, y1)`` with exclusive right/bottom edges.
"""

from __future__ import annotations

from collections.abc import Sequence

Rect = tuple[int, int, int, int]

GAP = 2  # pixels between a box and its label
STEP = 4  # pixels between candidate positions when shifting


def overlaps(a: Rect, b: Rect) -> bool:
    """Whether two rectangles share any pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: Sequence[tuple[int, int, int, int]], sizes: Sequence[tuple[int, int]],
                 image_size: tuple[int, int]) -> list[Rect]:
    """One label rectangle per face box ``(x, y, w, h)``, of the given ``(width, height)``, inside the
    ``(width, height)`` image where it fits, none overlapping an earlier one (earlier faces keep the best spots)."""
    width, height = image_size
    placed: list[Rect] = []
    for (x, y, _, h), (lw, lh) in zip(boxes, sizes, strict=True):
        left = min(max(0, x), max(0, width - lw))

        def rect(x0: int, y0: int, lw: int = lw, lh: int = lh) -> Rect:
            return (x0, y0, x0 + lw, y0 + lh)

        def ok(r: Rect) -> bool:
            return r[1] >= 0 and r[3] <= height and r[0] >= 0 and r[2] <= width \
                and not any(overlaps(r, p) for p in placed)

        below, above = y + h + GAP, y - lh - GAP
        rows = sorted(range(0, max(0, height - lh) + 1, STEP), key=lambda t: min(abs(t - below), abs(t - above)))
        cols = sorted(range(0, max(0, width - lw) + 1, STEP), key=lambda c: abs(c - left))
        candidates = [rect(left, below), rect(left, above)] + [rect(left, t) for t in rows] \
            + [rect(c, t) for c in cols for t in rows]
        placed.append(next((r for r in candidates if ok(r)), rect(left, below)))
    return placed
