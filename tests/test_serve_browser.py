"""``fdrl serve`` as a user meets it: the real command (uvicorn on 127.0.0.1, a free port, the shipped model),
spoken to over HTTP, and its page driven in headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
installed by ``.ci/run``) through Selenium: upload a photo, read the rendered labels, use the (fake) webcam.

The photo is composed at test time from two real FER2013 faces (never committed); the test skips without the
shared data, without Chromium/chromedriver, or without the serve/test extras, and says which. With
``FDRL_REQUIRE_BROWSER=1`` (set by ``.ci/run``) a missing or unstartable browser fails the test instead: CI must not
pass green with the page untested.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import shared

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install -e '.[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx (the test extra) is not installed")

SRC = Path(__file__).resolve().parents[1] / "src"
FACES = ("PublicTest_10130075.jpg", "PublicTest_10248771.jpg")  # happy; Haar finds both at 160 px


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``fdrl serve`` in a subprocess; yields its base URL once /health answers."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fdrl.cli", "serve", "--port", str(port),
                                 "--max-upload-mb", "1", "--log-level", "warning"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120  # importing torch on two busy cores can take a while
        while True:
            if proc.poll() is not None:
                pytest.fail(f"fdrl serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(base + "health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"fdrl serve did not answer /health within 120 s:\n{log.read_text()}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """Two real faces, 160 px each, on a 720x400 backdrop."""
    root = shared("fer2013") / "test" / "happy"
    canvas = Image.new("RGB", (720, 400), (90, 120, 140))
    for name, xy in zip(FACES, [(60, 120), (440, 110)], strict=True):
        canvas.paste(Image.open(root / name).convert("RGB").resize((160, 160)), xy)
    path = tmp_path_factory.mktemp("photo") / "two_faces.jpg"
    canvas.save(path, quality=95)
    return path


def test_real_server_over_http(photo, server):  # photo first: no server when it skips
    h = httpx.get(server + "health").json()
    assert h["model"] == "fdrl_fer2013.pt" and h["detector"] == "mtcnn_lite"
    r = httpx.post(server + "v1/predict", files=[("files", (photo.name, photo.read_bytes()))], timeout=60)
    assert r.status_code == 200
    faces = r.json()["faces"]
    assert [f["label"] for f in faces] == ["happy", "happy"] and all(len(f["alpha"]) > 0 for f in faces)
    big = httpx.post(server + "v1/predict", files=[("files", ("big.jpg", b"\0" * (2**20 + 2**10)))], timeout=60)
    assert big.status_code == 413 and "--max-upload-mb" in big.json()["error"]


REQUIRE_BROWSER = os.environ.get("FDRL_REQUIRE_BROWSER") == "1"


def _no_browser(reason: str):
    """Skip, or fail where a browser is required (CI): the page test must not turn into a silent skip there."""
    if REQUIRE_BROWSER:
        pytest.fail(f"FDRL_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _browser(tmp_path):
    """Headless Chromium under Selenium, or a skip (a failure under FDRL_REQUIRE_BROWSER=1) saying what is missing."""
    try:
        from selenium import webdriver
    except ImportError:
        _no_browser("selenium (the test extra) is not installed")
    chromium = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and os.path.exists(p)), None)
    driver = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver")) if p and os.path.exists(p)),
                  None)
    if not chromium or not driver:
        _no_browser("Chromium or chromedriver not installed (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):  # a synthetic webcam
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=opts)
    except Exception as exc:  # noqa: BLE001  (a browser that cannot start here is an environment fact)
        _no_browser(f"headless Chromium did not start: {str(exc).splitlines()[0][:200]}")


def test_missing_browser_fails_where_required(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REQUIRE_BROWSER", True)
    with pytest.raises(pytest.fail.Exception, match="FDRL_REQUIRE_BROWSER=1 but no chromium"):
        _no_browser("no chromium")
    monkeypatch.setattr(sys.modules[__name__], "REQUIRE_BROWSER", False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        _no_browser("no chromium")


def test_browser_starts(tmp_path):
    """No data needed: where a browser is required, its absence fails here even if the page test skips for data."""
    browser = _browser(tmp_path)
    try:
        browser.get("data:text/html,<title>ok</title>")
        assert browser.title == "ok"
    finally:
        browser.quit()


def test_page_in_a_real_browser(photo, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    api = httpx.post(server + "v1/predict", files=[("files", (photo.name, photo.read_bytes()))], timeout=60).json()
    browser = _browser(tmp_path)
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(server)
        wait.until(lambda b: "fdrl_fer2013.pt" in b.find_element(By.ID, "model-info").text)
        browser.find_element(By.ID, "files").send_keys(str(photo))
        card = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f'.result[data-image-id="{photo.name}"]'))[0]
        wait.until(lambda b: len(card.find_elements(By.CSS_SELECTOR, ".box")) == len(api["faces"]))
        labels = [e.text for e in card.find_elements(By.CSS_SELECTOR, ".face .face-label")]
        assert labels == [f"#{k + 1} {f['label']} {f['confidence']:.2f}" for k, f in enumerate(api["faces"])]
        assert [f["label"] for f in api["faces"]] == ["happy", "happy"]
        assert card.find_element(By.CSS_SELECTOR, ".status").text == "2 faces"
        for face, li in zip(api["faces"], card.find_elements(By.CSS_SELECTOR, ".face"), strict=True):
            assert len(li.find_elements(By.CSS_SELECTOR, ".probs .fill")) == len(api["classes"])
            p = face["probabilities"][face["label"]]
            assert li.find_element(By.CSS_SELECTOR, ".probs .top.value").text == f"{p:.2f}"
            track = li.find_element(By.CSS_SELECTOR, ".probs .top.track")  # the bar is drawn p of the way along
            fill = track.find_element(By.CSS_SELECTOR, ".fill")
            assert track.size["width"] > 50 and abs(fill.size["width"] - p * track.size["width"]) <= 2
            assert len(li.find_elements(By.CSS_SELECTOR, ".alpha .fill")) == len(face["alpha"])
        box = card.find_element(By.CSS_SELECTOR, ".box")  # drawn where the API says, on the displayed image
        img = card.find_element(By.CSS_SELECTOR, ".stage img")
        scale = img.size["width"] / 720
        x, y = face_xy = api["faces"][0]["box"][:2]
        assert abs(box.location["x"] - img.location["x"] - x * scale) <= 3, face_xy
        assert abs(box.location["y"] - img.location["y"] - y * scale) <= 3, face_xy
        if os.environ.get("FDRL_SCREENSHOT"):  # docs/serve_page.png: FDRL_SCREENSHOT=page.png pytest -k browser
            _screenshot(browser, wait, server, os.environ["FDRL_SCREENSHOT"])

        browser.find_element(By.ID, "cam-start").click()  # Chromium's fake camera: a moving test pattern
        wait.until(lambda b: b.find_element(By.ID, "cam-snap").is_enabled())
        wait.until(lambda b: b.execute_script("return document.getElementById('video').videoWidth") > 0)
        browser.find_element(By.ID, "cam-snap").click()
        cam = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '.result[data-image-id="webcam.jpg"]'))[0]
        assert cam.find_element(By.CSS_SELECTOR, ".status").text in ("no face found", "1 face", "2 faces")
        assert browser.find_element(By.ID, "message").get_attribute("class") != "error"
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        browser.quit()


def _screenshot(browser, wait, server: str, out: str) -> None:
    """The page on a public-domain portrait (Grace Hopper, US Navy photo, in matplotlib's sample data), so the
    documentation shows no FER2013 image (docs/serve_page.png)."""
    from selenium.webdriver.common.by import By

    mpl = pytest.importorskip("matplotlib", reason="matplotlib's sample photo is what the screenshot shows")
    portrait = Path(mpl.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    browser.get(server)
    wait.until(lambda b: "fdrl_fer2013.pt" in b.find_element(By.ID, "model-info").text)
    browser.find_element(By.ID, "files").send_keys(str(portrait))
    card = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '.result[data-image-id="grace_hopper.jpg"]'))[0]
    wait.until(lambda b: card.find_elements(By.CSS_SELECTOR, ".face .face-label"))
    browser.save_screenshot(out)
