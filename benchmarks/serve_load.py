"""A bounded load test of ``fdrl serve`` on this machine: N POST /v1/predict requests, C at a time, one photo each;
reports requests/s, p50/p95/max latency, and errors (any answer other than 200 with one image status).

    python benchmarks/serve_load.py                         # starts `fdrl serve` (shipped model) on a free port
    python benchmarks/serve_load.py --url http://127.0.0.1:8000/ --requests 300 --concurrency 8
    python benchmarks/serve_load.py --photo group.jpg -- --detector dlib   # after --: options for fdrl serve
    python benchmarks/serve_load.py --json results/serve_load.json           # also a result file

The photo by default is composed at run time from two real FER2013 faces (../shared/data; never saved), else it
is a drawn face from the synthetic set. Only loopback addresses are accepted: this is not a tool for loading
someone else's server.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image

from fdrl.records import run_record, write_json

ROOT = Path(__file__).resolve().parents[1]
FACES = ("PublicTest_10130075.jpg", "PublicTest_10248771.jpg")


def default_photo(fer_root: Path) -> tuple[bytes, str]:
    canvas = Image.new("RGB", (720, 400), (90, 120, 140))
    if all((fer_root / "test" / "happy" / f).is_file() for f in FACES):
        for name, xy in zip(FACES, [(60, 120), (440, 110)], strict=True):
            canvas.paste(Image.open(fer_root / "test" / "happy" / name).convert("RGB").resize((160, 160)), xy)
        what = "720x400, two FER2013 faces at 160 px"
    else:
        from fdrl.data.synthetic import draw_face

        face = Image.fromarray(draw_face(np.random.default_rng(0), 3, size=160)).convert("RGB")
        canvas.paste(face, (280, 120))
        what = "720x400, one drawn (synthetic) face at 160 px"
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue(), what


def start_server(extra: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "fdrl.cli", "serve", "--port", str(port), "--log-level",
                             "warning", *extra], env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"fdrl serve did not start (exit code {proc.poll()})")


async def load(url: str, photo: bytes, requests: int, concurrency: int, timeout: float):
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    faces: Counter[int] = Counter()
    queue = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in queue:  # a shared iterator: each request is taken by exactly one worker
            t = time.perf_counter()
            try:
                r = await client.post(url + "v1/predict", files=[("files", (f"photo{i}.jpg", photo, "image/jpeg"))])
                ok = r.status_code == 200 and len(r.json()["images"]) == 1
                if ok:
                    faces[len(r.json()["faces"])] += 1
                else:
                    errors[f"HTTP {r.status_code}"] += 1
            except (httpx.HTTPError, ValueError) as exc:
                ok = False
                errors[type(exc).__name__] += 1
            if ok:
                latencies.append(time.perf_counter() - t)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, errors, faces, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running fdrl serve on a loopback address (default: start one)")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--photo", default=None, help="the image every request sends (default: composed, see above)")
    p.add_argument("--fer-root", default=str(ROOT.parent / "shared" / "data" / "fer2013"))
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request before it counts as an error")
    p.add_argument("--json", default=None, help="also write the figures to this result file")
    p.add_argument("serve_args", nargs="*", help="after --: options for the fdrl serve this script starts")
    args = p.parse_args()
    if args.requests < 1 or not 1 <= args.concurrency <= 64:
        p.error("--requests must be >= 1 and --concurrency within 1..64")
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        p.error(f"--url must be a loopback address (127.0.0.1, localhost, ::1), got {args.url}")
    if args.photo:
        photo, what = Path(args.photo).read_bytes(), args.photo
    else:
        photo, what = default_photo(Path(args.fer_root))
    proc = None
    url = args.url.rstrip("/") + "/" if args.url else None
    if url is None:
        proc, url = start_server(args.serve_args)
    try:
        health = httpx.get(url + "health", timeout=10).json()
        asyncio.run(load(url, photo, min(args.concurrency, 4), 1, args.timeout))  # warm-up, not counted
        latencies, errors, faces, wall = asyncio.run(load(url, photo, args.requests, args.concurrency, args.timeout))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    ms = sorted(1000 * x for x in latencies)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    print(f"model {health['model']} ({health['detector']} detector); photo: {what}, {len(photo) / 1024:.0f} KiB")
    print(f"{args.requests} requests, {args.concurrency} concurrent, {os.cpu_count()} CPU cores: "
          f"{args.requests / wall:.1f} requests/s over {wall:.1f} s")
    if ms:
        print(f"latency ms: p50 {q[49]:.0f}  p95 {q[94]:.0f}  max {ms[-1]:.0f}")
    print(f"errors: {sum(errors.values())}" + (f" ({dict(errors)})" if errors else "")
          + f"; faces per answer: {dict(sorted(faces.items()))}")
    if args.json:
        write_json(args.json, run_record("serve_load") | {
            "model": health["model"], "detector": health["detector"], "photo": what, "photo_kib": len(photo) / 1024,
            "requests": args.requests, "concurrency": args.concurrency, "cores": os.cpu_count(), "wall_s": wall,
            "requests_per_second": args.requests / wall,
            "latency_ms": {"p50": q[49], "p95": q[94], "max": ms[-1]} if ms else None,
            "errors": dict(errors), "faces_per_answer": {str(k): v for k, v in sorted(faces.items())}})


if __name__ == "__main__":
    main()
