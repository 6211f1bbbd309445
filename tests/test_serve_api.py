"""``fdrl serve``'s HTTP API in-process (httpx's ASGI transport): the same JSON as
``fdrl predict --format json``, per-file statuses, 4xx for bad requests, 413, the pixel limit, one model call at
a time under concurrent requests."""

import asyncio
import io
import json
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("python_multipart", reason="the serve extra is not installed (pip install -e '.[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx (the test extra) is not installed")

from conftest import CLASSES, write_image  # noqa: E402
from fdrl.cli import main  # noqa: E402
from fdrl.inference.recognizer import Recognizer  # noqa: E402
from fdrl.inference.serve import MB, Limits, create_app  # noqa: E402


@pytest.fixture(scope="module")
def rec(ckpt):
    return Recognizer(ckpt, detector="none")


class Client:
    """Synchronous calls into the ASGI app in this process (no socket): each request runs its own event loop."""

    def __init__(self, app) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        async def go():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t") as c:
                return await c.request(method, url, **kwargs)
        return asyncio.run(go())

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture(scope="module")
def client(rec):
    return Client(create_app(rec, Limits(max_upload_bytes=1 * MB, max_pixels=200_000, max_files=5)))


def _png_claiming(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header claims width x height pixels (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _files(paths):
    return [("files", (Path(p).name, Path(p).read_bytes())) for p in paths]


def test_predict_answers_the_same_json_as_the_cli(client, ckpt, tmp_path, capsys):
    paths = [write_image(tmp_path / "a.png", (64, 64), 1), write_image(tmp_path / "b.jpg", (50, 70), 2),
             write_image(tmp_path / "c.png", (30, 30), 3, mode="L")]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths.append(tmp_path / "broken.jpg")
    resp = client.post("/v1/predict", files=_files(paths))
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    got = resp.json()
    main(["predict", *map(str, paths), "--checkpoint", str(ckpt), "--detector", "none", "--format", "json"])
    cli = json.loads(capsys.readouterr().out)
    for entry in cli["images"] + cli["faces"]:
        entry["image_id"] = Path(entry["image_id"]).name  # the CLI names files by path, the API by upload name
    assert got["classes"] == cli["classes"] == CLASSES
    assert [s["image_id"] for s in got["images"]] == ["a.png", "b.jpg", "c.png", "broken.jpg"]
    assert got["images"][:3] == cli["images"][:3]
    assert got["images"][3]["status"].startswith("unreadable: not a readable image")
    assert [f["image_id"] for f in got["faces"]] == [f["image_id"] for f in cli["faces"]]
    for a, b in zip(got["faces"], cli["faces"], strict=True):
        assert a.keys() == b.keys() and (a["label"], a["box"]) == (b["label"], b["box"])
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-6)
        assert len(a["alpha"]) == 3


def test_bad_requests_get_a_4xx_with_a_reason(client, tmp_path):
    png = write_image(tmp_path / "a.png", (32, 32)).read_bytes()
    r = client.post("/v1/predict", json={"files": []})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    r = client.post("/v1/predict", data={"note": "no file here"},
                    headers={"content-type": "multipart/form-data; boundary=xyz"}, content=b"--xyz--\r\n")
    assert r.status_code == 400 and "no image file" in r.json()["error"]
    r = client.post("/v1/predict", files=[("files", (f"{i}.png", png)) for i in range(6)])  # max_files=5
    assert r.status_code == 400 and "Too many files" in r.json()["error"]
    assert client.get("/v1/predict").status_code == 405
    assert client.get("/nowhere").status_code == 404


def test_too_large_is_413(client):
    big = b"\0" * (1 * MB + 1)
    r = client.post("/v1/predict", files=[("files", ("big.png", big))])
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["error"]

    async def chunked():  # no Content-Length: the limit must hold while the body streams in
        yield b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'
        for _ in range(3):
            yield b"\0" * (MB // 2)

    r = client.post("/v1/predict", content=chunked(),
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413


def test_pixel_limit_stops_decompression_bombs_before_decoding(client, tmp_path):
    ok = write_image(tmp_path / "ok.png", (100, 100)).read_bytes()
    over = write_image(tmp_path / "over.png", (500, 500)).read_bytes()  # 250,000 > 200,000 pixels
    bomb = _png_claiming(8_000, 8_000)  # 64 M pixels claimed by 60 bytes (192 MB if decoded)
    huge = _png_claiming(100_000, 100_000)  # 10 G pixels: above PIL's own limit too
    t = time.perf_counter()
    r = client.post("/v1/predict", files=[("files", ("ok.png", ok)), ("files", ("over.png", over)),
                                          ("files", ("bomb.png", bomb)), ("files", ("huge.png", huge))])
    assert time.perf_counter() - t < 10 and r.status_code == 200
    status = {s["image_id"]: s["status"] for s in r.json()["images"]}
    assert status["ok.png"] == "ok"
    assert status["over.png"].startswith("unreadable: 500x500 pixels") and "--max-pixels" in status["over.png"]
    assert status["bomb.png"].startswith("unreadable: 8000x8000 pixels (64.0 M) is over this server's limit")
    assert status["huge.png"].startswith("unreadable: image too large (decompression-bomb limit)")


def test_repeated_file_names_get_distinct_ids(client, tmp_path):
    png = write_image(tmp_path / "a.png", (32, 32)).read_bytes()
    r = client.post("/v1/predict", files=[("files", ("webcam.jpg", png))] * 3)
    ids = [s["image_id"] for s in r.json()["images"]]
    assert ids == ["webcam.jpg", "webcam.jpg (2)", "webcam.jpg (3)"]
    assert sorted({f["image_id"] for f in r.json()["faces"]}) == sorted(ids)


def test_health_and_page(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "tiny.pt" and h["classes"] == CLASSES
    assert h["detector"] == "none" and h["limits"]["max_pixels"] == 200_000
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("static/app.js", "static/style.css"):
        assert asset in page.text
        assert client.get("/" + asset).status_code == 200
    assert "v1/predict" in client.get("/static/app.js").text


def test_concurrent_requests_reach_the_model_one_at_a_time(ckpt, tmp_path):
    rec = Recognizer(ckpt, detector="none")
    active, peak, threads = 0, 0, set()
    lock = threading.Lock()
    inner = rec.predict_images

    def watched(items):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            threads.add(threading.current_thread().name)
        try:
            time.sleep(0.05)  # widen the window in which a second call could overlap
            return inner(items)
        finally:
            with lock:
                active -= 1

    images = [write_image(tmp_path / f"{i}.png", (40, 40), i).read_bytes() for i in range(8)]
    direct = rec.predict(Image.open(io.BytesIO(images[5])))
    rec.predict_images = watched
    app = create_app(rec)

    async def burst():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await asyncio.gather(*(c.post("/v1/predict", files=[("files", (f"{i}.png", b))])
                                          for i, b in enumerate(images)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.json()["images"][0]["image_id"] for r in responses] == [f"{i}.png" for i in range(8)]
    assert responses[5].json()["faces"][0]["label"] == direct.faces[0].label
    assert peak == 1 and len(threads) == 1 and threads.pop().startswith("fdrl-inference")


def test_requests_beyond_max_pending_get_503_and_the_rest_their_answers(ckpt, tmp_path):
    """Waiting uploads sit in memory, so the queue is bounded: with the model busy, requests beyond
    ``max_pending`` are refused at once with 503 and Retry-After; those admitted are all answered."""
    rec = Recognizer(ckpt, detector="none")
    release, inner, calls = threading.Event(), rec.predict_images, []

    def held(items):
        calls.append(1)
        assert release.wait(10), "the test never released the model"
        return inner(items)

    rec.predict_images = held
    app = create_app(rec, Limits(max_pending=3))
    image = write_image(tmp_path / "a.png", (40, 40), 1).read_bytes()

    async def burst():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            post = [asyncio.create_task(c.post("/v1/predict", files=[("files", (f"{i}.png", image))]))
                    for i in range(5)]
            for _ in range(500):  # until the admitted three are in and the two others answered
                await asyncio.sleep(0.01)
                if sum(t.done() for t in post) == 2:
                    break
            refused = [t.result() for t in post if t.done()]
            healthy = await c.get("/health")  # the event loop still answers while the model is busy
            release.set()
            return refused, healthy, await asyncio.gather(*post)

    refused, healthy, responses = asyncio.run(burst())
    assert [r.status_code for r in refused] == [503, 503] and refused[0].headers["retry-after"] == "1"
    assert "--max-pending" in refused[0].json()["error"] and healthy.status_code == 200
    assert healthy.json()["limits"]["max_pending"] == 3
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 503, 503] and len(calls) == 3
    after = Client(app).post("/v1/predict", files=[("files", ("b.png", image))])  # the count went back down
    assert after.status_code == 200


def test_serve_cli_errors_are_one_line(capsys, monkeypatch):
    import sys

    assert main(["serve", "--model", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown packaged model 'nope'" in err[0] and "fer2013" in err[0]
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the serve extra were not installed
    assert main(["serve"]) == 2
    assert "pip install 'fdrl[serve]'" in capsys.readouterr().err


def test_a_bad_image_gets_its_status_and_the_others_their_results(ckpt, tmp_path, monkeypatch):
    """A detector failure (cv2.error on a 3000x1 strip), a TIFF whose decoding raises TypeError, an EPS file (which
    would run Ghostscript) and an ICO hiding a larger PNG: each its own status, never HTTP 500 for the request."""
    import cv2
    from PIL import EpsImagePlugin

    from fdrl.faces.whole import NoDetector

    class FailsOnStrips:
        name = "none"

        def detect(self, image):
            if image.height < 4:
                raise cv2.error("OpenCV(4) resize.cpp: error: (-215:Assertion failed) !dsize.empty()")
            return NoDetector().detect(image)

    def never(*args, **kwargs):
        raise AssertionError("Ghostscript must not run on an upload")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", never)
    rec = Recognizer(ckpt, detector="none")
    rec.detector = FailsOnStrips()
    client = Client(create_app(rec))
    tiff = tmp_path / "bad.tif"
    Image.new("RGB", (32, 24), (10, 20, 30)).save(tiff, "TIFF")
    tiff.write_bytes(tiff.read_bytes().replace(struct.pack("<HHI", 273, 4, 1), struct.pack("<HHI", 273, 11, 1)))
    png, icon = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (3000, 3000)).save(png, "PNG")
    icon.write(struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png.getvalue()), 22)
               + png.getvalue())
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"
    r = client.post("/v1/predict", files=[
        ("files", ("ok.png", write_image(tmp_path / "ok.png", (64, 64)).read_bytes())),
        ("files", ("strip.png", write_image(tmp_path / "strip.png", (3000, 1)).read_bytes())),
        ("files", ("bad.tif", tiff.read_bytes())), ("files", ("x.eps", eps)), ("files", ("i.ico", icon.getvalue()))])
    assert r.status_code == 200
    status = {s["image_id"]: s["status"] for s in r.json()["images"]}
    assert status["ok.png"] == "ok" and [f["image_id"] for f in r.json()["faces"]] == ["ok.png"]
    assert status["strip.png"].startswith("unreadable: face detection failed (error: ")
    assert status["bad.tif"].startswith("unreadable: not a readable image (TypeError: ")
    assert status["x.eps"] == ("unreadable: not a readable image (format EPS is not accepted; accepted: JPEG, PNG, "
                               "BMP, GIF, TIFF, WEBP, PPM)")
    assert "format ICO is not accepted" in status["i.ico"]


def test_unique_names_never_repeat():
    from fdrl.inference.serve import unique_names

    names = unique_names(["a.jpg", "a.jpg", "a.jpg (2)", None, "upload3"])
    assert len(set(names)) == 5
    assert names == ["a.jpg", "a.jpg (3)", "a.jpg (2)", "upload3 (2)", "upload3"]  # a file keeps its own name
    assert unique_names(["w.jpg"] * 3) == ["w.jpg", "w.jpg (2)", "w.jpg (3)"]


def test_serve_device_errors_are_one_line(ckpt, capsys):
    assert main(["serve", "--checkpoint", str(ckpt), "--device", "cuda:99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device 'cuda:99' is not available" in err[0]
