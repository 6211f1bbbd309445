"""The runner side of ``benchmarks/peers.py``: one runner script per package, run inside that package's own virtual
environment, reads a JSON request on stdin and writes one JSON answer on stdout.

Request: ``{"modes": {mode: [image paths]}, "threads": N, "batch": N}``. Answer: ``{"version", "labels" (the
package's own label names, in its output order), "notes", "modes": {mode: {"labels", "faces", "errors",
"seconds"}}}``, one entry per image in ``labels`` (the package's label for the largest face, or null when it found
none), ``faces`` (faces found) and ``errors`` (null, or the exception the package raised on that image), and
``seconds`` the time spent in the package's calls (image decoding and one warm-up call excluded).

Only the standard library is imported here: each runner imports its package after :func:`begin`, which fixes the
thread counts first. Whatever the package prints goes to stderr, so stdout carries the answer alone.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS", "NUMEXPR_NUM_THREADS")

_answer = sys.stdout


def begin() -> dict[str, Any]:
    """Read the request, cap the thread counts of the libraries still to be imported, and send anything later
    printed to stdout (by the package, or by C code below it) to stderr instead."""
    global _answer
    request = json.load(sys.stdin)
    for var in THREAD_VARIABLES:
        os.environ[var] = str(request["threads"])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stdout.flush()
    _answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return request


def largest(faces: Sequence[Any], area: Callable[[Any], float]) -> Any:
    """The face with the largest box (``area`` of it), or None for no face."""
    return max(faces, key=area, default=None)


def evaluate(paths: Sequence[str], load: Callable[[str], Any],
             predict: Callable[[Any], tuple[str | None, int]] | None = None,
             predict_batch: Callable[[list[Any]], list[tuple[str | None, int]]] | None = None,
             batch: int = 1) -> dict[str, Any]:
    """Each image through ``predict`` (one image -> (label of the largest face or None, faces found)), or through
    ``predict_batch`` in chunks of ``batch``; an exception on one image is recorded in its place (a failing batch
    marks each of its images)."""
    if not paths:
        return {"labels": [], "faces": [], "errors": [], "seconds": 0.0}
    call = predict_batch or (lambda images: [predict(im) for im in images])  # noqa: E731
    step = batch if predict_batch else 1
    try:  # warm-up: lazy initialisation and first-call allocation stay out of the timing
        call([load(paths[0])])
    except Exception:  # noqa: BLE001, S110 - the image is timed and its error recorded below
        pass
    labels: list[str | None] = []
    faces: list[int] = []
    errors: list[str | None] = []
    seconds = 0.0
    for i in range(0, len(paths), step):
        images = [load(p) for p in paths[i:i + step]]
        t = time.perf_counter()
        try:
            out, error = call(images), None
        except Exception as exc:  # noqa: BLE001 - whatever the package raises on this image is its answer
            out, error = [(None, 0)] * len(images), f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        seconds += time.perf_counter() - t
        labels.extend(label for label, _ in out)
        faces.extend(int(n) for _, n in out)
        errors.extend([error] * len(images))
    return {"labels": labels, "faces": faces, "errors": errors, "seconds": seconds}


def finish(version: str, labels: Sequence[str], modes: dict[str, dict[str, Any]], notes: str = "") -> None:
    """Write the answer on the real stdout."""
    json.dump({"version": version, "labels": list(labels), "notes": notes, "modes": modes}, _answer)
    _answer.write("\n")
    _answer.flush()


def main(run: Callable[[dict[str, Any]], None]) -> None:
    """``run(request)`` with the request read; a failure exits non-zero with its traceback on stderr."""
    request = begin()
    try:
        run(request)
    except Exception:  # noqa: BLE001 - reported to the driver as this peer's error
        traceback.print_exc()
        sys.exit(1)
