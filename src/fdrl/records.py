"""What a result file records beside its figures: what produced it, the command, the machine (benchmarks' and
scripts' ``--json`` files; torch-free); and the sha256 by which runs and transfers name the files they read.

The file is a result file in the sense of ``scripts/results_tables.py``: written to ``results/NAME.json`` and named
in a page's ``<!-- results:NAME -->`` block, it is the table that page prints, so a new run of the benchmark is a new
table (``python scripts/results_tables.py`` rewrites it). Its ``benchmark`` key picks the renderer.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_name()}, {cores} cores usable, {platform.system()} {platform.machine()}"


def run_record(benchmark: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The head of a result file: ``benchmark`` (the renderer), the command as typed, the machine and versions."""
    args = sys.argv[1:] if argv is None else list(argv)
    record: dict[str, Any] = {"benchmark": benchmark,
                              "command": " ".join(["python", f"benchmarks/{benchmark}.py", *args]),
                              "machine": machine(), "python": platform.python_version()}
    if "torch" in sys.modules:
        record["torch"] = sys.modules["torch"].__version__
    return record


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes (hex), read a MiB at a time: what a record names an input file by."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}", file=sys.stderr)
