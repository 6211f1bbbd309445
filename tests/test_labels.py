"""Label placement in annotated images: labels of adjacent faces never cover each other."""

import itertools

from PIL import Image

from fdrl.inference.annotate import annotate
from fdrl.inference.labels import overlaps, place_labels
from fdrl.inference.results import FaceResult

SIZE = (91, 36)  # 3 lines of "surprise 0.91" at 7 x 12 px: wider than the 40 px boxes below


def _check(rects, image_size):
    for a, b in itertools.combinations(rects, 2):
        assert not overlaps(a, b), (a, b)
    for x0, y0, x1, y1 in rects:
        assert 0 <= x0 < x1 <= image_size[0] and 0 <= y0 < y1 <= image_size[1]


def test_adjacent_faces_get_disjoint_labels():
    boxes = [(10, 10, 40, 40), (55, 10, 40, 40)]
    naive = [(x, y + h + 2, x + SIZE[0], y + h + 2 + SIZE[1]) for x, y, w, h in boxes]
    assert overlaps(*naive), "the case must be one where labels placed below each box collide"
    rects = place_labels(boxes, [SIZE, SIZE], (200, 200))
    _check(rects, (200, 200))
    assert rects[0] == naive[0]  # the first face keeps the spot below its box


def test_below_then_above_then_shifted():
    # room below the box: below
    assert place_labels([(10, 100, 40, 40)], [SIZE], (200, 200)) == [(10, 142, 101, 178)]
    # no room below the box (bottom edge of the image): above
    assert place_labels([(10, 150, 40, 40)], [SIZE], (200, 200)) == [(10, 112, 101, 148)]
    # a row of five faces along the top of a narrow image (one label per row fits): each finds its own spot
    boxes = [(x, 5, 30, 30) for x in range(0, 150, 32)]
    rects = place_labels(boxes, [SIZE] * len(boxes), (160, 240))
    _check(rects, (160, 240))


def test_annotate_draws_labels_where_placed():
    img = Image.new("RGB", (200, 200), (128, 128, 128))
    probs = {"surprise": 0.91, "fear": 0.05, "happy": 0.04}
    faces = [FaceResult("i", k, box, 1.0, "surprise", 0.91, probs) for k, box in
             enumerate([(10, 10, 40, 40), (55, 10, 40, 40)])]
    out = annotate(img, faces)
    rects = place_labels([f.box for f in faces], [SIZE, SIZE], img.size)
    for x0, y0, _, _ in rects:  # each label's black background starts where the placement put it
        assert out.getpixel((x0, y0)) == (0, 0, 0)
