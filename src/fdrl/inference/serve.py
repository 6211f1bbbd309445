"""``fdrl serve``: the Recognizer behind a local HTTP API and a small web page (Starlette + uvicorn).

``POST /v1/predict`` takes images as ``multipart/form-data`` and answers with exactly the JSON of
``fdrl predict --format json`` (``PredictionResult.to_json``), the images named after the uploaded files.
``GET /health`` says which model runs; ``GET /`` is the page (plain files in ``static/``, no build step).

The model is loaded once. Decoding and inference run in one worker thread, so requests are served one at a
time by the model (torch and onnxruntime use several cores for each), while the event loop keeps accepting
connections and answering ``/health``. Limits: the request body (413 above ``max_upload_bytes``, checked from
``Content-Length`` and again while reading), files per request, pixels per image (a header check before
decoding, against decompression bombs: a few kB of PNG can claim gigapixels), and predict requests in progress
(503 with ``Retry-After`` above ``max_pending``: waiting uploads are held in memory, so the queue is bounded).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from PIL import Image, ImageOps
from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ImageReadError
from ..media import image_read_errors, open_image, to_rgb
from .recognizer import Recognizer

MB = 2**20
STATIC_DIR = Path(str(resources.files("fdrl.inference") / "static"))


@dataclass(frozen=True)
class Limits:
    """What one request may carry; each is a ``fdrl serve`` option except ``max_files``."""

    max_upload_bytes: int = 32 * MB  # the whole request body (the CLI's help repeats these two defaults)
    max_pixels: int = 50_000_000  # per image (a 50-megapixel photo decodes to 150 MB of RGB)
    max_files: int = 64
    max_pending: int = 16  # predict requests being read, queued or run at once; more: 503 (bounds the memory
    # held by waiting uploads to about max_pending x max_upload_bytes)


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """An uploaded file as RGB with EXIF orientation applied; :class:`ImageReadError` with the reason, raised
    before any pixel is decoded when the header claims more than ``max_pixels``, or when the file is not one of
    the raster formats in :data:`~fdrl.media.IMAGE_FORMATS` (EPS would run Ghostscript on it)."""
    if not data:
        raise ImageReadError("zero-byte file")
    with image_read_errors(), open_image(io.BytesIO(data)) as im:
        if im.width * im.height > max_pixels:
            raise ImageReadError(f"{im.width}x{im.height} pixels ({im.width * im.height / 1e6:.1f} M) is over "
                                 f"this server's limit of {max_pixels / 1e6:.1f} M pixels per image "
                                 f"(fdrl serve --max-pixels)")
        im.load()
        return to_rgb(ImageOps.exif_transpose(im))


def _decoded(uploads: list[tuple[str, bytes]], max_pixels: int) -> Iterator[tuple[str, Image.Image | Exception]]:
    """Lazily, so only one decoded photo is held at a time."""
    for name, data in uploads:
        try:
            yield name, decode_upload(data, max_pixels)
        except ImageReadError as exc:
            yield name, exc


def unique_names(names: list[str | None]) -> list[str]:
    """Upload file names as image ids, every one distinct: the first file of each name keeps it, a repeat (every
    webcam frame is ``webcam.jpg``) or a nameless file (``upload<i>``) gets the first free `` (2)``, `` (3)``...
    that no upload is literally called."""
    literal = {n for n in names if n}
    taken: set[str] = set()
    out = []
    for i, name in enumerate(names):
        base = name or f"upload{i}"
        new, k = base, 1
        while new in taken or (new != name and new in literal):
            k += 1
            new = f"{base} ({k})"
        taken.add(new)
        out.append(new)
    return out


class BodyLimit:
    """413 for a request body above ``limit`` bytes: at once from ``Content-Length``, else while it streams in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    def _too_large(self, size: str) -> HTTPException:
        return HTTPException(413, f"request body of {size} is over this server's limit of "
                                  f"{self.limit / MB:g} MB (fdrl serve --max-upload-mb)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await _error_response(self._too_large(f"{int(length) / MB:.1f} MB"))(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise self._too_large(f"more than {self.limit / MB:g} MB")
            return message

        await self.app(scope, limited, send)


def _error_response(exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_response(exc)


async def _server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


def create_app(recognizer: Recognizer, limits: Limits = Limits()) -> Starlette:
    """The ASGI app around one loaded ``recognizer``; all inference happens in a single worker thread."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fdrl-inference")

    def run(uploads: list[tuple[str, bytes]]) -> str:
        return recognizer.predict_images(_decoded(uploads, limits.max_pixels)).to_json()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": Path(recognizer.checkpoint).name,
                             "classes": recognizer.classes, "detector": recognizer.detector.name,
                             "input_size": recognizer.prep.input_size, "limits": asdict(limits)})

    pending = 0  # predict requests in progress; the event loop is one thread, so a plain counter is safe

    async def predict(request: Request) -> Response:
        nonlocal pending
        if pending >= limits.max_pending:
            raise HTTPException(503, f"this server is busy: {pending} requests are in progress, its limit "
                                     "(fdrl serve --max-pending); retry shortly", headers={"Retry-After": "1"})
        pending += 1
        try:
            return await _predict(request)
        finally:
            pending -= 1

    async def _predict(request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(415, "send the images as multipart/form-data, one file part each (field name "
                                     f"'files'); got Content-Type {ctype or 'none'!r}")
        form = await request.form(max_files=limits.max_files, max_fields=limits.max_files)
        try:
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            if not files:
                raise HTTPException(400, "no image file in the request: send one or more file parts "
                                         "(e.g. curl -F files=@photo.jpg)")
            names = unique_names([f.filename for f in files])
            uploads = [(n, await f.read()) for n, f in zip(names, files, strict=True)]
        finally:
            await form.close()
        text = await asyncio.get_running_loop().run_in_executor(worker, run, uploads)
        return Response(text, media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        worker.shutdown(wait=True)

    return Starlette(
        routes=[Route("/", index), Route("/health", health), Route("/v1/predict", predict, methods=["POST"]),
                Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")],
        middleware=[Middleware(BodyLimit, limit=limits.max_upload_bytes)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
