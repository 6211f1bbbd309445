"""fdrl beside the expression recognisers a user would pick instead: the PyPI packages that work offline because
their weights ship inside them, each in its own virtual environment, on any labelled face folder.

The folder holds one subfolder per class (``angry/``, ``happy/``, ...; FER2013's ``test/`` is one). Every package
runs in two modes:

- ``pipeline``: the package end to end as a user calls it, its own face detector and classifier on each image as
  it is; the largest face found is the answer, and an image where it finds no face counts as wrong;
- ``crop``: its classifier on the whole image as the face, the detector bypassed, with the preprocessing the
  package applies to a face box (read from its source; each runner in ``benchmarks/peers/`` says how).

fdrl runs both modes with test-time augmentation ``none`` (single crop) and ``flip`` (its default). Reported per
package and mode: accuracy, mean class accuracy (the mean of the per-class recalls), the fraction of images with no
face found, images the package raised an error on (counted wrong), and faces per second through the package's calls
(one process, ``--threads`` threads, images decoded beforehand and untimed; the peers one image per call as their
APIs take them, fdrl in batches of ``--batch``).

Each package's labels are mapped to fdrl's class names by an explicit table (``PEERS`` below); a runner whose package
answers a label outside its table fails rather than guessing. Folder names are matched to those names in lower case
(with ``FOLDER_ALIASES`` such as ``anger`` -> ``angry``); a class a package lacks, or a folder class no package has,
is counted wrong for every image of it, and the row says so.

Each peer is installed once into ``--venv-dir/<name>`` (pinned versions, ``PEERS``) and reused while its pins are
unchanged; its runner talks JSON over stdin/stdout (``benchmarks/peers/_protocol.py``). A peer that fails to
install, import or run gets a row with the reason instead of stopping the others; logs are kept beside the venvs.

    python benchmarks/peers.py --data ../shared/data/fer2013/test --out peers.json
    python benchmarks/peers.py --peers fer,facex --limit 200             # a stratified subset of 200 images
    python benchmarks/peers.py --photo-size 256 --modes pipeline         # faces upscaled to fill 256 px photos
    python benchmarks/peers.py --show results/peers_fer2013_publictest.json --markdown   # re-print a stored run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fdrl.data.datasets import FER2013_CLASSES
from fdrl.media import IMAGE_EXTENSIONS

RUNNERS = Path(__file__).resolve().parent / "peers"
CLASSES: tuple[str, ...] = FER2013_CLASSES  # fdrl's class names (those of the default packaged model)
FOLDER_ALIASES = {"anger": "angry", "disgusted": "disgust", "fearful": "fear", "happiness": "happy",
                  "sadness": "sad", "surprised": "surprise"}
MODES = ("pipeline", "crop")
# The two peers built on torchvision: its Linux wheels on PyPI are linked against the CUDA build of torch and fail
# to import beside the CPU-only wheel (torch==2.13.0+cpu), so these venvs hold the CUDA build (several GB, run on
# the CPU here). OpenCV stays on 4.x everywhere: 5.x no longer bundles the Haar cascades that fer loads.
TORCH = ("torch==2.14.1", "torchvision==0.29.1")


@dataclass(frozen=True)
class Peer:
    """A package under comparison: how to install it, its runner, and its labels in fdrl's class names."""

    runner: str
    labels: dict[str, str | None]  # the package's label -> fdrl class name (None: no counterpart, always wrong)
    install: tuple[str, ...] = ()  # pip requirements, installed with their dependencies; () : this interpreter
    install_no_deps: tuple[str, ...] = ()  # then these without theirs (declared pins that cannot be met)
    pypi: str = ""

    @property
    def venv(self) -> bool:
        return bool(self.install or self.install_no_deps)


PEERS: dict[str, Peer] = {
    "fdrl": Peer("run_fdrl.py", {c: c for c in CLASSES}),
    # fer declares facenet-pytorch (pinned to torch<2.3; only for its optional MTCNN), moviepy<2 (video) and
    # opencv-contrib-python: left out, its image path needs TensorFlow, OpenCV, requests and pkg_resources.
    "fer": Peer(
        "run_fer.py",
        {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "sad": "sad",
         "surprise": "surprise", "neutral": "neutral"},
        install=("tensorflow-cpu==2.21.0", "opencv-python-headless==4.14.0.94", "requests", "pillow",
                 "setuptools<81"),
        install_no_deps=("fer==25.10.3",), pypi="fer"),
    "what-the-face-classification": Peer(
        "run_what_the_face_classification.py",
        {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "sad": "sad",
         "surprise": "surprise", "neutral": "neutral"},
        install=(*TORCH, "opencv-python==4.14.0.94", "setuptools<81", "what-the-face-classification==0.0.27"),
        pypi="what-the-face-classification"),
    # facial-emotion-recognition declares an unpinned facenet_pytorch, whose newest release pins torch<2.3;
    # facenet-pytorch 2.5.3 has no torch pin.
    "facial-emotion-recognition": Peer(
        "run_facial_emotion_recognition.py",
        {"Angry": "angry", "Disgust": "disgust", "Fear": "fear", "Happy": "happy", "Sad": "sad",
         "Surprise": "surprise", "Neutral": "neutral"},
        install=(*TORCH, "facenet-pytorch==2.5.3", "opencv-python==4.14.0.94"),
        install_no_deps=("facial-emotion-recognition==0.3.4",), pypi="facial-emotion-recognition"),
    # facex declares opencv-contrib-python and the full tensorflow; the CPU build and headless OpenCV serve it alike.
    "facex": Peer(
        "run_facex.py",
        {"anger": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "sadness": "sad",
         "surprised": "surprise", "neutral": "neutral"},
        install=("tensorflow-cpu==2.21.0", "opencv-python-headless==4.14.0.94", "scikit-image==0.26.0"),
        install_no_deps=("facex==1.1.0",), pypi="facex"),
}


class PeerError(Exception):
    """A peer that could not be installed or run; the message is the reason shown in its row."""


@dataclass
class Sample:
    """The images of a labelled folder, with their fdrl class names, and the folder's class names as found."""

    paths: list[Path]
    truth: list[str]
    classes: list[str] = field(default_factory=list)


# ---- data --------------------------------------------------------------------------------------------------------
def class_name(folder: str) -> str:
    """A class folder's name as one of fdrl's class names where it is one (case and ``FOLDER_ALIASES`` aside)."""
    name = folder.lower()
    return FOLDER_ALIASES.get(name, name)


def read_folder(root: Path) -> Sample:
    """Every image under ``root/<class>/`` (sorted), labelled with its class folder's name."""
    paths, truth = [], []
    for cdir in sorted(d for d in root.iterdir() if d.is_dir()):
        for p in sorted(cdir.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(p)
                truth.append(class_name(cdir.name))
    if not paths:
        raise SystemExit(f"no images under {root}/<class>/ (expected one subfolder per class)")
    found = set(truth)
    return Sample(paths, truth, [c for c in CLASSES if c in found] + sorted(found - set(CLASSES)))


def stratified(sample: Sample, limit: int | None, seed: int = 0) -> Sample:
    """``limit`` images drawn per class in proportion to the class sizes (largest remainders, ties to the earlier
    class), each class's share drawn at random with ``seed``; all of them when ``limit`` is None or not smaller."""
    if limit is None or limit >= len(sample.paths):
        return sample
    by_class = {c: [i for i, t in enumerate(sample.truth) if t == c] for c in sample.classes}
    exact = {c: limit * len(ix) / len(sample.paths) for c, ix in by_class.items()}
    quota = {c: int(e) for c, e in exact.items()}
    for c in sorted(by_class, key=lambda c: (-(exact[c] - quota[c]), sample.classes.index(c)))[:limit - sum(
            quota.values())]:
        quota[c] += 1
    rng = np.random.default_rng(seed)
    keep = sorted(i for c, ix in by_class.items() for i in rng.permutation(ix)[:quota[c]])
    return Sample([sample.paths[i] for i in keep], [sample.truth[i] for i in keep], sample.classes)


def upscaled(paths: Sequence[Path], side: int, out: Path) -> list[Path]:
    """Each image resized (bicubic) to fill a ``side`` x ``side`` photo, written losslessly under ``out``."""
    from PIL import Image

    written = []
    for i, p in enumerate(paths):
        dst = out / f"{i:06d}.png"
        with Image.open(p) as im:
            im.convert("RGB").resize((side, side), Image.BICUBIC).save(dst)
        written.append(dst)
    return written


# ---- installing and running a peer -------------------------------------------------------------------------------
def _tail(text: str, prefer: str = "ERROR") -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    flagged = [ln for ln in lines if prefer in ln]
    return (flagged or lines or ["(no output)"])[-1][:300]


def ensure_venv(name: str, peer: Peer, venv_dir: Path) -> Path:
    """The Python of ``name``'s virtual environment, created and installed unless one with the same pins exists."""
    if not peer.venv:
        return Path(sys.executable)
    path = venv_dir / name
    python = path / "bin" / "python"
    stamp = path / "fdrl-peer.json"
    want = {"install": list(peer.install), "install_no_deps": list(peer.install_no_deps)}
    if stamp.is_file() and python.is_file() and json.loads(stamp.read_text()) == want:
        return python
    if (path / "pyvenv.cfg").is_file():  # an earlier venv of this peer with other pins or a failed install
        shutil.rmtree(path)
    venv_dir.mkdir(parents=True, exist_ok=True)
    log = venv_dir / f"{name}.install.log"
    pip = [str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
    steps = [("creating the venv", [sys.executable, "-m", "venv", str(path)])]
    if peer.install:
        steps.append((" ".join(peer.install), pip + list(peer.install)))
    if peer.install_no_deps:
        steps.append((" ".join(peer.install_no_deps) + " --no-deps", pip + ["--no-deps", *peer.install_no_deps]))
    failed = None
    with log.open("w") as fh:
        for what, cmd in steps:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_peer_env(peer, 1)).returncode:
                failed = what
                break
    if failed:
        raise PeerError(f"install failed ({failed}): {_tail(log.read_text())}; see {log}")
    stamp.write_text(json.dumps(want))
    return python


def _peer_env(peer: Peer, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    if peer.venv:  # nothing of this interpreter's path leaks into the peer's venv
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
    env.update({v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    return env


def run_peer(name: str, peer: Peer, python: Path, modes: dict[str, list[str]], threads: int, batch: int,
             timeout: float, log_dir: Path) -> dict[str, Any]:
    """The runner's answer for ``modes`` (mode -> image paths), its labels checked against the peer's table."""
    request = {"modes": modes, "threads": threads, "batch": batch}
    try:
        proc = subprocess.run([str(python), str(RUNNERS / peer.runner)], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout, env=_peer_env(peer, threads))
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"no answer within {timeout:.0f} s") from exc
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{name}.run.log").write_text(proc.stderr)
    if proc.returncode:
        raise PeerError(f"runner failed (exit {proc.returncode}): {_tail(proc.stderr, 'Error')}")
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise PeerError(f"runner answered no JSON: {_tail(proc.stdout)}") from exc
    check_labels(peer, answer["labels"])
    return answer


def check_labels(peer: Peer, labels: Sequence[str]) -> None:
    """The package's labels must be exactly the keys of the peer's table: a label added or renamed by a new release
    stops the run instead of being scored by guess."""
    if set(labels) != set(peer.labels):
        raise PeerError(f"the package's labels {sorted(labels)} differ from the mapping table's "
                        f"{sorted(peer.labels)}")


# ---- scoring and reporting ---------------------------------------------------------------------------------------
def score(peer: Peer, truth: Sequence[str], classes: Sequence[str], result: dict[str, Any], mode: str,
          ) -> dict[str, Any]:
    """One row: the package's answers (its labels, None for no face) against the folder's classes."""
    pred = [None if label is None else peer.labels[label] for label in result["labels"]]
    if len(pred) != len(truth):
        raise PeerError(f"{mode}: {len(pred)} answers for {len(truth)} images")
    right = np.array([p == t for p, t in zip(pred, truth, strict=True)])
    truth_arr = np.array(truth)
    per_class = {c: float(right[truth_arr == c].mean()) for c in classes if (truth_arr == c).any()}
    lacks = [c for c in classes if c not in set(peer.labels.values())]
    no_face = sum(f == 0 for f in result["faces"]) if mode.split("+")[0] == "pipeline" else 0
    seconds = result["seconds"]
    return {"mode": mode, "n": len(truth), "accuracy": float(right.mean()),
            "mean_class_accuracy": float(np.mean(list(per_class.values()))), "no_face": no_face / len(truth),
            "errors": sum(e is not None for e in result["errors"]),
            "faces_per_s": len(truth) / seconds if seconds > 0 else None, "per_class": per_class,
            "lacks": lacks}


def error_row(name: str, reason: str) -> dict[str, Any]:
    return {"peer": name, "version": None, "mode": None, "error": reason}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """The rows as one text table, or as the Markdown table the docs print (:mod:`fdrl.tables`); a
    failed peer's row carries its reason."""
    if markdown:
        from fdrl.tables import peers_markdown

        return peers_markdown(rows)
    head = ["peer", "version", "mode", "accuracy", "mean class acc.", "no face", "errors", "faces/s", "note"]
    body = []
    for r in rows:
        if r.get("error"):
            body.append([r["peer"], r.get("version") or "-", r.get("mode") or "-", "-", "-", "-", "-", "-",
                         f"failed: {r['error']}"])
            continue
        note = f"lacks {', '.join(r['lacks'])} (counted wrong)" if r.get("lacks") else ""
        fps = r.get("faces_per_s")
        body.append([r["peer"], r["version"], r["mode"], _pct(r["accuracy"]), _pct(r["mean_class_accuracy"]),
                     _pct(r["no_face"]), str(r["errors"]), "-" if fps is None else f"{fps:.1f}", note])
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    fmt = [f"{{:{'<' if i < 3 or i == len(head) - 1 else '>'}{w}}}" for i, w in enumerate(widths)]
    return "\n".join("  ".join(f.format(x) for f, x in zip(fmt, line, strict=True)).rstrip()
                     for line in [head, *body])


def summary(report: dict[str, Any]) -> str:
    """The run in one line above the table."""
    counts = ", ".join(f"{c} {n}" for c, n in report["class_counts"].items())
    return (f"{report['images']} images from {report['data']} ({counts}); {report['threads']} thread(s); "
            f"pipeline inputs {report['photo'] or 'as they are'}")


# ---- main --------------------------------------------------------------------------------------------------------
def evaluate_peer(name: str, sample: Sample, modes: dict[str, list[str]], args: argparse.Namespace,
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows for one peer and what to record about it; an install or run failure is one error row."""
    peer = PEERS[name]
    info: dict[str, Any] = {"install": list(peer.install), "install_no_deps": list(peer.install_no_deps),
                            "labels": peer.labels}
    try:
        t = time.perf_counter()
        python = ensure_venv(name, peer, args.venv_dir)
        info["install_seconds"] = round(time.perf_counter() - t, 1)
        answer = run_peer(name, peer, python, modes, args.threads, args.batch, args.timeout, args.venv_dir)
        rows = [{"peer": name, "version": answer["version"]} | score(peer, sample.truth, sample.classes, res, mode)
                for mode, res in answer["modes"].items()]
    except PeerError as exc:
        info["error"] = str(exc)
        return [error_row(name, str(exc))], info
    info.update(version=answer["version"], notes=answer["notes"])
    return rows, info


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/fer2013/test"),
                   help="a labelled face folder: one subfolder of images per class")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of: {', '.join(PEERS)}")
    p.add_argument("--modes", default=",".join(MODES), help="pipeline, crop or both")
    p.add_argument("--limit", type=int, default=None, help="a stratified subset of this many images")
    p.add_argument("--seed", type=int, default=0, help="the draw of --limit")
    p.add_argument("--photo-size", type=int, default=None,
                   help="upscale each image to fill a square photo of this side for the pipeline mode")
    p.add_argument("--venv-dir", type=Path, default=Path.home() / ".cache" / "fdrl" / "peers",
                   help="one virtual environment per peer, reused while its pins are unchanged; logs beside them")
    p.add_argument("--threads", type=int, default=1, help="threads of each runner's libraries")
    p.add_argument("--batch", type=int, default=64, help="fdrl's batch size")
    p.add_argument("--timeout", type=float, default=7200, help="seconds one peer's runner may take")
    p.add_argument("--out", type=Path, default=None, help="write the rows and the run's settings as JSON here")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--show", type=Path, default=None, help="print the table of a stored --out file and exit")
    args = p.parse_args(argv)
    unknown = [n for n in args.peers.split(",") if n not in PEERS]
    bad_modes = [m for m in args.modes.split(",") if m not in MODES]
    if unknown or bad_modes:
        p.error(f"unknown peer(s) {unknown} or mode(s) {bad_modes}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.show:
        report = json.loads(args.show.read_text())
        print(summary(report))
        print(format_table(report["rows"], args.markdown))
        return report
    sample = stratified(read_folder(args.data), args.limit, args.seed)
    report: dict[str, Any] = {
        "benchmark": "peers",
        "command": " ".join(["python", "benchmarks/peers.py", *(sys.argv[1:] if argv is None else argv)]),
        "data": str(args.data), "images": len(sample.paths),
        "class_counts": {c: sample.truth.count(c) for c in sample.classes}, "limit": args.limit, "seed": args.seed,
        "threads": args.threads, "batch": args.batch,
        "photo": f"upscaled to {args.photo_size}x{args.photo_size}" if args.photo_size else None,
        "platform": " ".join(filter(None, [platform.machine(), platform.processor(), "Python",
                                            platform.python_version()])),
        "peers": {}, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in sample.paths]
        photos = [str(p) for p in upscaled(sample.paths, args.photo_size, Path(tmp))] if args.photo_size else paths
        modes = {m: (photos if m == "pipeline" else paths) for m in args.modes.split(",")}
        for name in args.peers.split(","):
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows, info = evaluate_peer(name, sample, modes, args)
            report["rows"].extend(rows)
            report["peers"][name] = info
    print(summary(report))
    print(format_table(report["rows"], args.markdown))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
