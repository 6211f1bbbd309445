"""The in-package MTCNN port (fdrl.faces.mtcnn): parity with facenet-pytorch, real faces, no false faces."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

import parity_reference as reference
from conftest import shared
from fdrl.faces import create_detector
from fdrl.faces.mtcnn import MTCNN, NETS, WEIGHTS, nms
from fdrl.faces.mtcnn_lite import MTCNNLiteDetector


def _fer_faces(n: int, start: int = 0) -> list[Image.Image]:
    root = shared("fer2013")
    paths = sorted((root / "test" / "happy").glob("PublicTest_*.jpg"))[start:start + n]
    return [Image.open(p).convert("RGB") for p in paths]


def _photo(faces: list[Image.Image], side: int, size=(960, 540), seed=0):
    """Real faces pasted on a textured backdrop, one per column; returns the photo and the pasted boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([(xx * 0.1 + 60) % 255, (yy * 0.15 + 90) % 255, np.full_like(xx, 130)], -1)
    canvas = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    step = size[0] // len(faces)
    boxes = []
    for i, face in enumerate(faces):
        x, y = i * step + (step - side) // 2, (size[1] - side) // 2
        canvas.paste(face.resize((side, side), Image.BILINEAR), (x, y))
        boxes.append((x, y, side))
    return canvas, boxes


def test_weights_ship_with_the_package_with_their_licence():
    assert WEIGHTS.stat().st_size < 3_000_000
    licence = (WEIGHTS.parent / "LICENSE-mtcnn.txt").read_text()
    assert "MIT License" in licence and "facenet-pytorch" in licence
    state = torch.load(WEIGHTS, weights_only=True)
    for name, cls in NETS.items():
        cls().load_state_dict(state[name], strict=True)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 4]], dtype=torch.float)
    scores = torch.tensor([0.8, 0.9, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 3]  # IoU(0,1)=0.68 > 0.5; box 3 overlaps box 1 by 0.24
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [1, 2]  # box 3 lies inside box 1 by its own area
    assert nms(boxes[:0], scores[:0], 0.5).numel() == 0
    assert nms(boxes.requires_grad_(), scores, 0.5).tolist() == [1, 2, 3]  # outside inference mode too


def test_nms_lets_an_empty_box_suppress_its_twin_without_warnings():
    """Two zero-area boxes at one place: their overlap ratio is 0/0, which (as a NaN compare in the torch code it
    replaced) suppresses the weaker one; the numpy division must not warn either."""
    import warnings

    boxes = torch.tensor([[5, 5, 5, 5], [5, 5, 5, 5], [20, 20, 30, 30]], dtype=torch.float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str) -> list[int]:
    """The textbook loop, one kept box at a time: what the blocked matrix NMS must reproduce exactly."""
    one = 1.0 if mode == "min" else 0.0
    area = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    order, keep = scores.argsort(descending=True).tolist(), []
    while order:
        i, order = order[0], order[1:]
        keep.append(i)
        rest = []
        for j in order:
            w = max(min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + one, 0)
            h = max(min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + one, 0)
            denom = min(area[i], area[j]) if mode == "min" else area[i] + area[j] - w * h
            if w * h / denom <= threshold:
                rest.append(j)
        order = rest
    return keep


@pytest.mark.parametrize("mode", ["union", "min"])
@pytest.mark.parametrize("block", [7, 1024])  # 7: candidates span many blocks, so kept boxes cross blocks
def test_nms_equals_the_greedy_loop_on_crowded_boxes(mode, block):
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 60, (150, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + rng.uniform(4, 30, (150, 2))], 1), dtype=torch.float64)
    scores = torch.tensor(rng.permutation(150) / 150.0)  # distinct, so the order is unambiguous
    kept = nms(boxes, scores, 0.5, mode=mode, block=block).tolist()
    assert kept == _greedy_nms(boxes, scores, 0.5, mode)
    assert 10 < len(kept) < 140  # the boxes really crowd each other


def test_no_faces_on_blank_or_noise_images():
    det = create_detector("mtcnn_lite")
    rng = np.random.default_rng(0)
    for img in (Image.new("RGB", (640, 480), (128, 128, 128)), Image.new("RGB", (12, 9)),
                Image.fromarray(rng.integers(0, 256, (480, 640, 3)).astype(np.uint8))):
        assert det.detect(img) == []
    with pytest.raises(ValueError, match=r"\(H, W, 3\) RGB array"):
        MTCNN().detect(np.zeros((10, 10)))


@pytest.mark.data
@pytest.mark.parametrize("side,size", [(96, (960, 540)), (160, (1280, 720)), (200, (2400, 1000))])
def test_finds_real_faces_with_eyes_inside_their_boxes(side, size):
    """Photos of several sizes (the last one is searched on a downscaled copy) with real faces at ``side`` px."""
    det = create_detector("mtcnn_lite")
    photo, boxes = _photo(_fer_faces(5, start=10 * side // 48), side, size)
    faces = det.detect(photo)
    assert len(faces) >= 4 and all(0 < f.score <= 1 for f in faces)
    hit = set()
    for f in faces:
        x, y, w, h = f.box
        assert 0 <= x and 0 <= y and x + w <= photo.width and y + h <= photo.height
        cx, cy = x + w / 2, y + h / 2
        match = [i for i, (bx, by, s) in enumerate(boxes) if bx < cx < bx + s and by < cy < by + s]
        assert len(match) == 1 and 0.5 * side < w < 1.5 * side, f.box
        hit.add(match[0])
        (lx, ly), (rx, ry) = f.eyes
        assert x <= lx < rx <= x + w and y <= ly < y + h * 0.6 and y <= ry < y + h * 0.6
    assert len(hit) == len(faces)
    assert [f.box[2] * f.box[3] for f in faces] == sorted((f.box[2] * f.box[3] for f in faces), reverse=True)


@pytest.mark.data
def test_no_false_faces_on_single_face_portraits():
    det = create_detector("mtcnn_lite")
    for face in _fer_faces(8, start=40):
        portrait = face.resize((256, 256), Image.BICUBIC)
        assert len(det.detect(portrait)) <= 1
        canvas = Image.new("RGB", (256, 256), (200, 190, 170))
        canvas.paste(face.resize((160, 160), Image.BICUBIC), (48, 40))
        faces = det.detect(canvas)
        assert len(faces) <= 1 and all(48 <= f.box[0] + f.box[2] / 2 <= 208 for f in faces)


@pytest.mark.data
def test_border_retry_finds_faces_that_fill_the_frame():
    """Close-ups (FER2013 faces upscaled to fill 256 px) that MTCNN misses get a second search inside a border."""
    plain = MTCNNLiteDetector(border_retry=0, contrast_retry=0)
    retry = MTCNNLiteDetector(contrast_retry=0)
    found = {"plain": 0, "retry": 0}
    for face in _fer_faces(30, start=100):
        portrait = face.resize((256, 256), Image.BICUBIC)
        found["plain"] += len(plain.detect(portrait))
        faces = retry.detect(portrait)
        assert len(faces) <= 1
        for f in faces:
            x, y, w, h = f.box
            assert 0 <= x and 0 <= y and x + w <= 256 and y + h <= 256 and w > 128 and h > 128, f.box
            assert f.eyes is None or all(0 <= v <= 256 for eye in f.eyes for v in eye)
        found["retry"] += len(faces)
    assert found["retry"] >= found["plain"] + 3, found


def test_border_retry_maps_boxes_back_and_runs_only_when_nothing_was_found(monkeypatch):
    det = MTCNNLiteDetector()
    seen = []

    def fake(pixels):  # a "face" only in the framed copy: 100 px square at (10, 20) of the framed pixels
        seen.append(pixels.shape[:2])
        if len(seen) == 1:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        marks = np.array([[[40.0, 50.0], [80.0, 50.0], [60, 70], [45, 90], [75, 90]]])
        return np.array([[10.0, 20.0, 110.0, 120.0]]), np.array([0.99]), marks

    monkeypatch.setattr(det.net, "detect", fake)
    faces = det.detect(Image.new("RGB", (200, 100), (90, 90, 90)))
    assert seen == [(100, 200), (150, 250)]  # the second search adds 25 px (a quarter of the short side) a side
    (face,) = faces
    assert face.box == (0, 0, 85, 95)  # (-15, -5, 100, 100) clipped to the photo
    assert face.eyes == ((15.0, 25.0), (55.0, 25.0))
    seen.clear()
    det.border_retry = 0  # the contrast retry alone: half the short side a side
    (face,) = det.detect(Image.new("RGB", (200, 100)))
    assert seen == [(100, 200), (200, 300)] and face.box == (0, 0, 60, 70)  # (-40, -30, 100, 100) clipped
    seen.clear()
    det.contrast_retry = 0  # both off: one search only
    assert det.detect(Image.new("RGB", (200, 100))) == [] and seen == [(100, 200)]


def _reference_mtcnn(monkeypatch):
    """facenet-pytorch's own MTCNN, imported without its package ``__init__`` (which needs requests and tqdm);
    where torchvision is absent its ``batched_nms`` is replaced by a plain-Python greedy NMS."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None:
        pytest.skip("facenet-pytorch not installed (its pins ask for torch<2.3; pip install --no-deps "
                    "facenet-pytorch to run this parity test)")
    if importlib.util.find_spec("torchvision") is None:
        def batched_nms(boxes, scores, groups, threshold):
            b, s, g = boxes.tolist(), scores.tolist(), groups.tolist()

            def iou(p, q):
                w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
                h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
                union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
                return w * h / union if union > 0 else 0.0

            keep = []
            for i in sorted(range(len(s)), key=lambda i: -s[i]):
                if all(g[i] != g[k] or iou(b[i], b[k]) <= threshold for k in keep):
                    keep.append(i)
            return torch.tensor(keep, dtype=torch.long)

        names = ["torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms",
                 "torchvision.transforms.functional"]
        stubs = {n: types.ModuleType(n) for n in names}
        stubs["torchvision.ops.boxes"].batched_nms = batched_nms
        for n in names:
            monkeypatch.setitem(sys.modules, n, stubs[n])
    package = types.ModuleType("facenet_pytorch")
    package.__path__ = list(spec.submodule_search_locations)
    monkeypatch.setitem(sys.modules, "facenet_pytorch", package)
    for n in [m for m in sys.modules if m.startswith("facenet_pytorch.")]:
        monkeypatch.delitem(sys.modules, n)
    return importlib.import_module("facenet_pytorch.models.mtcnn")


@pytest.mark.data
def test_parity_with_facenet_pytorch(monkeypatch):
    ref = _reference_mtcnn(monkeypatch)
    port = MTCNN()
    torch.manual_seed(0)
    for name, cls, x in (("pnet", ref.PNet, torch.randn(2, 3, 40, 56)), ("rnet", ref.RNet, torch.randn(5, 3, 24, 24)),
                         ("onet", ref.ONet, torch.randn(5, 3, 48, 48))):
        theirs, ours = cls().eval()(x), getattr(port, name)(x)  # the reference loads its own copy of the weights
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    photo, _ = _photo(_fer_faces(5, start=3), 120)
    rb, rp, rpts = ref.MTCNN(keep_all=True).detect(photo, landmarks=True)
    b, p, pts = port.detect(np.asarray(photo))
    assert len(b) == len(rb) >= 4
    o1, o2 = np.argsort(np.asarray(rb, float)[:, 0]), np.argsort(b[:, 0])
    # Same faces; the boxes differ by the resize implementation only (OpenCV's area vs torch's).
    np.testing.assert_allclose(b[o2], np.asarray(rb, float)[o1], atol=0.06 * 120)
    np.testing.assert_allclose(pts[o2], np.asarray(rpts, float)[o1], atol=0.06 * 120)
    np.testing.assert_allclose(p[o2], np.asarray(rp, float)[o1], atol=0.05)


def _assert_same_faces(found, stored, side: float):
    """Same faces as the reference's detection, matched left to right; boxes and landmarks differ by the resize
    implementation only (OpenCV's area vs torch's), hence a tolerance of a few percent of the face side."""
    (b, p, pts), (rb, rp, rpts) = found, stored
    assert len(b) == len(rb) > 0
    o1, o2 = np.argsort(rb[:, 0]), np.argsort(b[:, 0])
    np.testing.assert_allclose(b[o2], rb[o1], atol=0.06 * side)
    np.testing.assert_allclose(pts[o2], rpts[o1], atol=0.06 * side)
    np.testing.assert_allclose(p[o2], rp[o1], atol=0.05)


def test_nets_and_detection_match_stored_facenet_outputs():
    """Without facenet-pytorch installed: its P/R/O-Net outputs on seeded inputs and its detection on a real
    portrait, stored by tests/parity_reference.py, against the port's (converted weights, own pipeline)."""
    stored = reference.load(reference.FACENET_FILE)
    port = MTCNN()
    for name, x in reference.net_inputs().items():
        with torch.no_grad():
            outs = getattr(port, name)(x)
        assert len(outs) == len([k for k in stored if k.startswith(name + "_")])
        for i, y in enumerate(outs):
            torch.testing.assert_close(y, torch.from_numpy(stored[f"{name}_{i}"]), atol=1e-5, rtol=1e-5)
    side = stored["hopper_boxes"][0, 2] - stored["hopper_boxes"][0, 0]
    _assert_same_faces(port.detect(reference.hopper()),
                       (stored["hopper_boxes"], stored["hopper_probs"], stored["hopper_points"]), side)


@pytest.mark.data
def test_detection_matches_stored_facenet_outputs_on_real_faces():
    stored = reference.load(reference.FACENET_FILE)
    photo, _ = _photo(_fer_faces(reference.FER_PHOTO["count"], start=reference.FER_PHOTO["start"]),
                      reference.FER_PHOTO["side"])
    assert len(stored["fer_boxes"]) >= 4
    _assert_same_faces(MTCNN().detect(np.asarray(photo)),
                       (stored["fer_boxes"], stored["fer_probs"], stored["fer_points"]), reference.FER_PHOTO["side"])


@pytest.mark.data
def test_channels_last_nets_give_the_nchw_results(monkeypatch):
    """The nets run channels-last for speed; the same nets and inputs in NCHW order must find the same faces (a
    layout slip, e.g. in R-Net's/O-Net's flatten into their dense layers, would change scores and boxes)."""
    import fdrl.faces.mtcnn as mtcnn

    photo, _ = _photo(_fer_faces(4, start=3), 120, (960, 540), seed=1)
    pixels = np.array(photo)
    fast = MTCNN(pad=True)
    assert fast.pnet.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert mtcnn._normalise(pixels).is_contiguous(memory_format=torch.channels_last)
    boxes, probs, points = fast.detect(pixels)
    assert len(boxes) >= 3
    normalise = mtcnn._normalise
    monkeypatch.setattr(mtcnn, "_normalise", lambda p: normalise(p).contiguous())
    slow = MTCNN(pad=True).to(memory_format=torch.contiguous_format)
    assert slow.pnet.conv1.weight.is_contiguous() and mtcnn._normalise(pixels).is_contiguous()
    ref = slow.detect(pixels)
    np.testing.assert_allclose(boxes, ref[0], atol=1e-2)
    np.testing.assert_allclose(probs, ref[1], atol=1e-5)
    np.testing.assert_allclose(points, ref[2], atol=1e-2)


@pytest.mark.data
def test_contrast_retry_finds_dark_close_ups():
    """Faces filling a dark frame (a movie still): the retry with the contrast stretched finds most that the plain
    and border searches miss; where the first search finds the face, nothing else runs."""
    on, off = MTCNNLiteDetector(), MTCNNLiteDetector(contrast_retry=0)
    dark = [Image.fromarray((np.asarray(f.resize((200, 200), Image.BILINEAR)) * 0.15).astype(np.uint8))
            for f in _fer_faces(20)]
    found_on, found_off = sum(bool(on.detect(d)) for d in dark), sum(bool(off.detect(d)) for d in dark)
    assert found_on >= 17 and found_on >= found_off + 5, (found_on, found_off)


def test_crop_caches_tell_the_detector_settings_apart():
    """Frames cropped with and without the retry, the coarse-level threshold or the tilted search differ, so their
    caches must not share a key; the plain name stays the key of caches made before any of them."""
    from fdrl.faces import FaceCropper
    from fdrl.faces.mtcnn_lite import BORDER_RETRY, CONTRAST_RETRY, LARGE_WINDOWS, TURN_ANGLE, TURN_MIN_FACE

    cropper = FaceCropper("mtcnn_lite", 0.1)
    det = cropper.detector
    assert BORDER_RETRY > 0 and LARGE_WINDOWS is not None and det.turn_angle == 0
    assert cropper.key == f"{det.key}:0.1:rot"
    large = "+large{}@{:g}".format(*LARGE_WINDOWS)
    contrast = f"+contrast{CONTRAST_RETRY:g}"
    assert det.key == f"mtcnn_lite+border{BORDER_RETRY:g}{contrast}{large}"
    tilted = FaceCropper("mtcnn_lite_tilted", 0.1).detector
    assert tilted.name == "mtcnn_lite_tilted" and tilted.turn_angle == TURN_ANGLE > 0
    assert tilted.key == \
        f"mtcnn_lite_tilted+border{BORDER_RETRY:g}{contrast}{large}+turn{TURN_ANGLE:g}@{TURN_MIN_FACE}"
    tilted.turn_min_face = 64
    assert tilted.key.endswith("@64")
    tilted.turn_angle = 0  # the name follows the setting
    assert tilted.name == "mtcnn_lite" and "turn" not in tilted.key
    det.net.large_windows = None
    assert det.key == f"mtcnn_lite+border{BORDER_RETRY:g}{contrast}"
    det.contrast_retry = 0
    assert det.key == f"mtcnn_lite+border{BORDER_RETRY:g}"
    det.border_retry = 0
    assert FaceCropper("opencv", 0.1).key == "opencv:0.1:rot" and det.key == "mtcnn_lite"


def test_large_window_threshold_applies_to_coarse_levels_only():
    """P-Net's second threshold holds on levels whose windows are at least the given side: beyond the largest
    window it changes nothing, below the smallest it is the threshold everywhere."""
    rng = np.random.default_rng(0)
    pixels = np.asarray(Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).resize((300, 200)))
    plain = MTCNN(min_face_size=40)._propose(pixels, 40)
    assert len(plain) > 0
    never = MTCNN(min_face_size=40, large_windows=(10_000, 0.2))._propose(pixels, 40)
    torch.testing.assert_close(never, plain)
    low = MTCNN(min_face_size=40, thresholds=(0.2, 0.7, 0.7))._propose(pixels, 40)
    everywhere = MTCNN(min_face_size=40, large_windows=(40, 0.2))._propose(pixels, 40)
    torch.testing.assert_close(everywhere, low)
    coarse = MTCNN(min_face_size=40, large_windows=(80, 0.2))._propose(pixels, 40)
    assert len(plain) < len(coarse) < len(low)
    assert (coarse[:, 2] - coarse[:, 0])[~torch.isin(coarse[:, 0], plain[:, 0])].min() > 40


@pytest.mark.parametrize("angle", [45.0, -45.0, 30.0])
def test_turned_copy_maps_back_to_the_photo(angle):
    """A marker pixel of the photo, found in the turned copy, maps back to where it was; the copy holds the whole
    photo (no corner cut off) and its new canvas is grey."""
    from fdrl.faces.mtcnn_lite import _apply, _turn

    photo = np.zeros((90, 160, 3), np.uint8)
    for x, y in ((1, 1), (158, 88), (37, 61)):
        marked = photo.copy()
        marked[y - 1:y + 2, x - 1:x + 2, 0] = 255  # red on black; the new canvas is grey (red - green = 0)
        turned, back = _turn(marked, angle)
        redness = turned[..., 0].astype(float) - turned[..., 1]
        ty, tx = np.unravel_index(redness.argmax(), turned.shape[:2])
        np.testing.assert_allclose(_apply(back, np.array([tx, ty], float)), (x, y), atol=1.0)
    turned, _ = _turn(photo, angle)
    assert turned[0, 0].tolist() == [128, 128, 128] and turned.shape[2] == 3


@pytest.mark.data
def test_tilted_faces_are_found_with_eyes_that_level_the_crop():
    """Real faces turned 50 degrees, which upright MTCNN misses or finds without eyes, are found by the search on
    the turned photo: one box per face, centred on it, with eyes whose line is tilted as the face is (so crop_face
    turns it upright); upright faces are not found twice."""
    import math

    tilt = 50.0
    faces = _fer_faces(5, start=40)
    side, step = 160, 240
    canvas = Image.new("RGB", (step * len(faces), 320), (128, 140, 150))
    centres = []
    for i, face in enumerate(faces):
        turned = face.resize((side, side), Image.BICUBIC).rotate(tilt, resample=Image.BICUBIC, expand=True,
                                                                  fillcolor=(128, 140, 150))
        x, y = i * step + (step - turned.width) // 2, (320 - turned.height) // 2
        canvas.paste(turned, (x, y))
        centres.append((x + turned.width / 2, y + turned.height / 2))
    upright_only = MTCNNLiteDetector(border_retry=0)
    det = MTCNNLiteDetector(border_retry=0, turn_angle=45)
    found = det.detect(canvas)
    upright = upright_only.detect(canvas)
    assert len(upright) < len(found) and sum(f.eyes is not None for f in upright) < len(faces) - 2
    assert 4 <= len(found) <= len(faces)
    hits = set()
    for f in found:
        x, y, w, h = f.box
        (i,) = [i for i, (cx, cy) in enumerate(centres) if abs(x + w / 2 - cx) < 0.2 * side
                and abs(y + h / 2 - cy) < 0.2 * side]
        hits.add(i)
        assert 0.6 * side < w < 1.4 * side
        assert f.eyes is not None
        (lx, ly), (rx, ry) = f.eyes
        # PIL turns counter-clockwise, so in image coordinates (y down) the eye line falls by `tilt` degrees.
        assert abs(math.degrees(math.atan2(ry - ly, rx - lx)) + tilt) < 15
    assert len(hits) == len(found)
    photo, boxes = _photo(_fer_faces(4, start=3), 120)
    assert len(det.detect(photo)) == len(upright_only.detect(photo)) == len(boxes)


@pytest.mark.data
def test_keep_proposals_filters_by_their_centre_in_input_pixels():
    """``keep_proposals`` sees P-Net's proposals' centres in the input's pixels: dropping the right half's proposals
    loses exactly the faces there and leaves the others as they were; keeping all changes nothing."""
    photo, boxes = _photo(_fer_faces(4, start=3), 120)
    pixels = np.asarray(photo)
    net = MTCNN(pad=True)
    full = net.detect(pixels)
    seen = []

    def left(centres):
        seen.append(centres)
        return centres[:, 0] < photo.width / 2

    half = net.detect(pixels, keep_proposals=left)
    assert len(full[0]) == len(boxes) and seen and seen[0].shape[1] == 2
    assert ((seen[0] >= 0) & (seen[0] <= (photo.width, photo.height))).all()
    on_left = (full[0][:, 0] + full[0][:, 2]) / 2 < photo.width / 2
    assert 0 < on_left.sum() < len(boxes)
    np.testing.assert_allclose(half[0], full[0][on_left], atol=1e-4)
    for a, b in zip(net.detect(pixels, keep_proposals=lambda c: np.ones(len(c), bool)), full, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.data
def test_turned_search_skips_faces_found_upright(monkeypatch):
    """The turned search sends fewer proposals to R-Net when upright faces with eyes are known (their finds would be
    dropped anyway), and finds the same faces as without the skip."""
    from fdrl.faces import mtcnn

    photo, _ = _photo(_fer_faces(4, start=3), 120)
    det = MTCNNLiteDetector(border_retry=0, turn_angle=45)
    rows = []
    forward = mtcnn.RNet.forward
    monkeypatch.setattr(mtcnn.RNet, "forward", lambda self, x: (rows.append(len(x)), forward(self, x))[1])
    skipped = det.detect(photo)
    with_skip, rows[:] = sum(rows), []
    tilted = det._tilted
    monkeypatch.setattr(det, "_tilted", lambda pixels, border, scale, known=(): tilted(pixels, border, scale, []))
    assert [f.box for f in det.detect(photo)] == [f.box for f in skipped] and len(skipped) == 4
    assert with_skip < sum(rows)
