"""First decode, memory per rank and training speed on an image folder of N generated faces.

    python benchmarks/scale.py --n 20000 --size 112 --work /tmp/fdrl_scale --serial-baseline
    python benchmarks/scale.py --n 200000 --size 112 --work /tmp/fdrl_scale --steps 20 --clean
    python benchmarks/scale.py --n 20000 --serial-baseline --json results/scale_20000.json   # also a result file

1. Writes ``WORK/faces-N-SIZE/{train,val,test}/<class>/*.jpg`` (N training faces from ``fdrl.data.synthetic``;
   kept for the next run of the same N and size unless ``--clean``).
2. First decode of the training split into the cache (``WORK/cache``): seconds, images/s, and the CPU time of the
   decode processes over the wall time (cores used).
3. For 1 and 2 ranks on this node:
   * "epoch": each rank opens the cache and reads every batch of its share of one epoch (``TensorSet.rows``: the
     data path of training without the model), so every row is read;
   * "train": ``torchrun --nproc-per-node R -m fdrl.cli train`` for ``--steps`` steps, with the steady
     images/s between the first and the last progress line (all ranks).
   Memory of each rank is sampled from ``/proc/PID/smaps_rollup`` every 0.2 s: peak RSS (resident, shared pages
   included), peak USS (private: Private_Clean + Private_Dirty) and
   peak anonymous memory; "sum PSS" is the peak over time of the ranks' proportional set sizes added up (a page
   mapped by two ranks counts half in each). Batches are read with positioned reads, so the cache file's pages sit
   in the page cache, mapped by no rank: "file cache" is the file's residency there (``fincore``) at the end of
   the phase, and "node" = sum PSS + file cache is what the job holds on the node, the pixels counted once. (An
   older checkout, which loads the cache into every rank, has the pixels in each rank's PSS instead.)

Only the public API and the ``fdrl train`` command are used, so the same script measures another checkout:
``PYTHONPATH=/path/to/other/src python benchmarks/scale.py ...``. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from fdrl.records import run_record, write_json

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
EVAL_PER_SPLIT = 70
MIB = 2**20


# ---------------------------------------------------------------------------------------------------------
# 1. the image folder
UNIQUE = 1001  # distinct drawings (22 ms each at 112 px), 143 per class; every file adds its own noise to one
_FACES: list[np.ndarray] = []  # drawn before the writing pool forks, so its workers inherit them
_SIZE = [112]


def _draw(i: int) -> np.ndarray:
    from fdrl.data.synthetic import draw_face

    return draw_face(np.random.default_rng([7, i]), i % len(CLASSES), _SIZE[0])



def _write_faces(job: tuple[str, str, int, int]) -> int:
    """Files ``start..stop`` of one split: face ``i % UNIQUE`` (class ``i % 7``) plus noise of its own, as JPEG."""
    from PIL import Image

    root, split, start, stop = job
    for i in range(start, stop):
        label = i % len(CLASSES)
        base = _FACES[(i % UNIQUE) // len(CLASSES) * len(CLASSES) + label].astype(np.int16)  # a face of its class
        noise = np.random.default_rng([8, i]).integers(-6, 7, base.shape, dtype=np.int16)
        path = Path(root, split, CLASSES[label], f"{i:07d}.jpg")
        Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return stop - start


def make_folder(root: Path, n: int, size: int, workers: int) -> float:
    """The image folder of ``n`` training faces (and EVAL_PER_SPLIT each for val and test); seconds taken."""
    done = root / "complete.json"
    if done.is_file():
        return 0.0
    t0 = time.perf_counter()
    _SIZE[0] = size
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        _FACES[:] = pool.map(_draw, range(UNIQUE), chunksize=25)
    jobs = []
    for split, count in (("train", n), ("val", EVAL_PER_SPLIT), ("test", EVAL_PER_SPLIT)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        jobs += [(str(root), split, a, min(count, a + 2000)) for a in range(0, count, 2000)]
    with ctx.Pool(workers) as pool:
        written = 0
        for k in pool.imap_unordered(_write_faces, jobs):
            written += k
            print(f"  wrote {written}/{n + 2 * EVAL_PER_SPLIT} images", end="\r", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    done.write_text(json.dumps({"n": n, "size": size}))
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------
# memory of running processes
def memory(pid: int) -> dict[str, int] | None:
    """RSS, PSS, USS and anonymous bytes of ``pid`` now, and its peak RSS (VmHWM); None once it has exited."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = {}
    for line in (rollup + status).splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] == "kB":
            kb[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return {"rss": kb.get("Rss", 0), "pss": kb.get("Pss", 0), "anon": kb.get("Anonymous", 0),
            "uss": kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0), "hwm": kb.get("VmHWM", 0)}


class Sampler(threading.Thread):
    """Samples the processes ``pids()`` returns every ``period`` s: each one's peaks, and the peak of their PSS sum."""

    def __init__(self, pids, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pids, self.period = pids, period
        self.peak: dict[int, dict[str, int]] = {}
        self.sum_pss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.take()
            time.sleep(self.period)

    def take(self) -> None:
        total = 0
        for pid in self.pids():
            m = memory(pid)
            if m is None:
                continue
            p = self.peak.setdefault(pid, {k: 0 for k in m})
            for k, v in m.items():
                p[k] = max(p[k], v)
            total += m["pss"]
        self.sum_pss = max(self.sum_pss, total)

    def result(self) -> dict[str, float]:
        self.stop.set()
        self.join()
        ranks = list(self.peak.values())
        if not ranks:
            return {}
        worst = {k: max(r[k] for r in ranks) / MIB for k in ranks[0]}
        return {"ranks": len(ranks), "rank_rss_mib": max(worst["rss"], worst["hwm"]), "rank_uss_mib": worst["uss"],
                "rank_anon_mib": worst["anon"], "rank_pss_mib": worst["pss"], "sum_pss_mib": self.sum_pss / MIB}


def resident_mib(cache: Path, size: int) -> float:
    """Page-cache residency of the training split's cache file (util-linux ``fincore``), the copy of the pixels
    that a node's ranks share; 0 when fincore is missing."""
    files = sorted(cache.glob(f"folder-train-{size}c-*"), key=lambda p: p.stat().st_mtime)
    if not files or files[-1].suffix == ".pt" or shutil.which("fincore") is None:
        return 0.0  # .pt: an older checkout's cache, loaded whole into every rank; its page cache is not used after
    out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", str(files[-1])], capture_output=True, text=True)
    return int(out.stdout.split()[0]) / MIB if out.returncode == 0 and out.stdout.strip() else 0.0


def children(pid: int, match: str) -> list[int]:
    """Direct children of ``pid`` whose command line contains ``match``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int(next(ln for ln in (d / "status").read_text().splitlines() if ln.startswith("PPid:")).split()[1])
            if ppid == pid and match in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                out.append(int(d.name))
        except (OSError, StopIteration, ValueError):
            continue
    return out


# ---------------------------------------------------------------------------------------------------------
# 2. the first decode
def data_config(root: Path, cache: Path, size: int):
    from fdrl.config import load_config

    return load_config(None, ["data.dataset=folder", f"data.root={root}", "data.train_split=train",
                              "data.val_split=val", "data.test_split=test", f"data.cache_dir={cache}",
                              f"data.preprocessing.input_size={size}"]).data


def first_decode(root: Path, cache: Path, size: int, workers: int | None) -> dict[str, float]:
    from fdrl.data.loading import cache_dir, list_split
    from fdrl.data.tensors import decode_dataset

    d = data_config(root, cache, size)
    ds = list_split(d, "train", 0)
    extra = {"workers": workers} if "workers" in inspect.signature(decode_dataset).parameters else {}
    before = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    t0 = time.perf_counter()
    data = decode_dataset(ds, size, False, cache_dir=cache_dir(d), log=print, **extra)
    wall = time.perf_counter() - t0
    after = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before, strict=True))
    files = sorted(Path(cache).glob(f"folder-train-{size}c-*"), key=lambda p: p.stat().st_mtime)
    return {"images": len(data), "seconds": wall, "images_per_second": len(data) / wall, "cores_used": cpu / wall,
            "cache_mib": files[-1].stat().st_size / MIB if files else 0.0,
            "decoder_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


# ---------------------------------------------------------------------------------------------------------
# 3a. an epoch of batches per rank, no model
def _epoch_rank(rank: int, world: int, root: str, cache: str, size: int, batch: int, ready, go) -> None:
    import torch

    from fdrl.config import TrainSection
    from fdrl.data.loading import cache_dir, list_split
    from fdrl.data.tensors import decode_dataset
    from fdrl.engine.trainer import epoch_batches
    from fdrl.runtime import DistInfo

    d = data_config(Path(root), Path(cache), size)
    data = decode_dataset(list_split(d, "train", 0), size, False, cache_dir=cache_dir(d), log=lambda m: None)
    gather = getattr(data, "rows", None) or (lambda idx: data.images[idx])
    torch.set_num_threads(1)
    checksum = 0
    for bi in epoch_batches(len(data), TrainSection(batch_size=batch, seed=0), 0, DistInfo(rank, world, rank)):
        checksum += int(gather(bi)[:, :, 0, 0].sum())  # the gather is the work; the sum keeps it from being idle
    ready.put(checksum)
    go.wait()


def epoch_pass(root: Path, cache: Path, size: int, batch: int, world: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    ready, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_epoch_rank, args=(r, world, str(root), str(cache), size, batch, ready, go))
             for r in range(world)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    sampler = Sampler(lambda: [p.pid for p in procs if p.pid])
    sampler.start()
    for _ in procs:
        ready.get(timeout=3600)
    seconds = time.perf_counter() - t0
    sampler.take()  # every rank has read its whole share and is still alive
    go.set()
    for p in procs:
        p.join()
    return {**sampler.result(), "seconds": seconds, "file_cache_mib": resident_mib(cache, size)}


# ---------------------------------------------------------------------------------------------------------
# 3b. training under torchrun
STEP_LINE = re.compile(r"epoch \d+/\d+ (\d+)/(\d+)\s")


def train_run(root: Path, cache: Path, work: Path, size: int, batch: int, world: int, steps: int,
              threads: int) -> dict[str, float]:
    out = work / f"run-{world}"
    shutil.rmtree(out, ignore_errors=True)
    sets = ["data.dataset=folder", f"data.root={root}", "data.train_split=train", "data.val_split=val",
            "data.test_split=test", f"data.cache_dir={cache}", f"data.preprocessing.input_size={size}",
            "model.alpha_reduce=mean", "train.epochs=1", f"train.batch_size={batch}",
            f"train.max_steps_per_epoch={steps}", f"train.num_threads={threads}", "train.log_every=5",
            "report.plots=false", "report.tsne=false"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}", "-m",
           "fdrl.cli", "train", "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sampler = Sampler(lambda: children(proc.pid, "fdrl.cli"))
    sampler.start()
    marks, tail = [], []
    for line in proc.stdout:
        tail = (tail + [line])[-30:]
        m = STEP_LINE.search(line)
        if m:
            marks.append((int(m.group(1)), time.perf_counter()))
    proc.wait()
    if proc.returncode:
        raise SystemExit(f"training with {world} rank(s) failed:\n{''.join(tail)}")
    mem = sampler.result()
    (s0, t_0), (s1, t_1) = marks[0], marks[-1]
    rate = (s1 - s0) * batch * world / max(1e-9, t_1 - t_0)
    return {**mem, "seconds": time.perf_counter() - t0, "steady_images_per_second": rate,
            "file_cache_mib": resident_mib(cache, size)}


# ---------------------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="training faces")
    p.add_argument("--size", type=int, default=112, help="image and input size (px)")
    p.add_argument("--work", type=Path, default=Path("/tmp/fdrl_scale"), help="folder for images, cache, runs")
    p.add_argument("--workers", type=int, default=None, help="decode processes (default: every core)")
    p.add_argument("--ranks", default="1,2", help="rank counts to measure on this node")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=30, help="training steps per rank")
    p.add_argument("--skip-train", action="store_true", help="measure decode and the epoch of batches only")
    p.add_argument("--serial-baseline", action="store_true",
                   help="also time the first decode with one worker (the speed-up of the pool)")
    p.add_argument("--clean", action="store_true", help="delete the images and the cache afterwards")
    p.add_argument("--json", type=Path, default=None,
                   help="write the figures to this result file (default: WORK/scale-N-SIZE.json)")
    p.add_argument("--decode-only", action="store_true", help=argparse.SUPPRESS)  # the first decode, in a fresh process
    args = p.parse_args()
    root, cache = args.work / f"faces-{args.n}-{args.size}", args.work / "cache"
    if args.decode_only:
        print(json.dumps(first_decode(root, cache, args.size, args.workers)))
        return
    import torch

    import fdrl

    cores = len(os.sched_getaffinity(0))
    print(f"fdrl from {Path(fdrl.__file__).parent}, torch {torch.__version__}, {cores} cores, N={args.n}, "
          f"{args.size} px colour")
    gen = make_folder(root, args.n, args.size, cores)
    if gen:
        print(f"generated {args.n + 2 * EVAL_PER_SPLIT} JPEG files in {gen:.0f} s")
    for old in cache.glob(f"folder-train-{args.size}c-*"):
        old.unlink()  # a first decode, every time
    def decode(workers: int | None, work: Path) -> dict[str, float]:
        cmd = [sys.executable, __file__, "--decode-only", "--n", str(args.n), "--size", str(args.size), "--work",
               str(work)] + (["--workers", str(workers)] if workers else [])
        return json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1])

    if args.serial_baseline:
        serial = args.work / "serial"
        shutil.rmtree(serial, ignore_errors=True)
        (serial / root.name).parent.mkdir(parents=True)
        (serial / root.name).symlink_to(root.resolve())
        one = decode(1, serial)
        shutil.rmtree(serial)
        print(f"first decode, 1 worker: {one['images']} images in {one['seconds']:.1f} s = "
              f"{one['images_per_second']:.0f} img/s, {one['cores_used']:.2f} cores busy")
    dec = decode(args.workers, args.work)
    print(f"first decode: {dec['images']} images in {dec['seconds']:.1f} s = {dec['images_per_second']:.0f} img/s, "
          f"{dec['cores_used']:.2f} cores busy; cache {dec['cache_mib']:.0f} MiB; peak RSS of the decoding process "
          f"{dec['decoder_peak_rss_mib']:.0f} MiB, of a decode worker {dec['worker_peak_rss_mib']:.0f} MiB")
    if args.serial_baseline:
        print(f"speed-up of the pool over one worker: {one['seconds'] / dec['seconds']:.2f}x")
    rows = []
    for world in (int(r) for r in args.ranks.split(",")):
        rows.append({"phase": "epoch", "world": world, **epoch_pass(root, cache, args.size, args.batch_size, world)})
        if not args.skip_train:
            rows.append({"phase": "train", "world": world,
                         **train_run(root, cache, args.work, args.size, args.batch_size, world, args.steps,
                                     max(1, cores // world))})
    for r in rows:
        r["node_mib"] = r["sum_pss_mib"] + r["file_cache_mib"]
    print(f"{'phase':6s} {'ranks':>5s} {'RSS/rank':>9s} {'USS/rank':>9s} {'anon/rank':>9s} {'sum PSS':>9s} "
          f"{'file cache':>10s} {'node':>7s} {'img/s':>7s} {'seconds':>8s}   (MiB; peaks)")
    for r in rows:
        rate = f"{r['steady_images_per_second']:7.1f}" if "steady_images_per_second" in r else f"{'-':>7s}"
        print(f"{r['phase']:6s} {r['world']:5d} {r['rank_rss_mib']:9.0f} {r['rank_uss_mib']:9.0f} "
              f"{r['rank_anon_mib']:9.0f} {r['sum_pss_mib']:9.0f} {r['file_cache_mib']:10.0f} {r['node_mib']:7.0f} "
              f"{rate} {r['seconds']:8.1f}")
    for phase in ("epoch", "train"):
        one = [r for r in rows if r["phase"] == phase and r["world"] == 1]
        two = [r for r in rows if r["phase"] == phase and r["world"] == 2]
        if one and two:
            node, pss = (two[0][k] / one[0][k] for k in ("node_mib", "sum_pss_mib"))
            print(f"{phase}: 2 ranks / 1 rank: node (sum PSS + file cache) {node:.2f}, sum PSS {pss:.2f}")
    write_json(args.json or args.work / f"scale-{args.n}-{args.size}.json", run_record("scale") | {
        "fdrl": str(Path(fdrl.__file__).parent), "n": args.n, "size": args.size, "batch_size": args.batch_size,
        "steps": args.steps, "decode": dec, "serial_decode": one if args.serial_baseline else None, "runs": rows})
    if args.clean:
        shutil.rmtree(root)
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
