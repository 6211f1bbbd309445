"""Loader throughput with and without the uint8 tensor cache.

    python benchmarks/loader_cache.py --dataset fer2013 --root ../shared/data/fer2013 --split publictest
    python benchmarks/loader_cache.py --split train --json results/loader_cache.json   # also a result file

"decode" reads and decodes every image file (what each epoch costs without the cache); "cache" reads the
cached uint8 tensor file (what every epoch after the first costs); "batched augmentation" is the per-epoch
cost of the training augmentation applied on tensors, batch 64, on this CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from fdrl.data.preprocess import BatchTransform
from fdrl.data.registry import create_dataset
from fdrl.data.tensors import decode_dataset
from fdrl.records import run_record, write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fer2013")
    p.add_argument("--root", default="../shared/data/fer2013")
    p.add_argument("--split", default="publictest")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--grayscale", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--augment", default="fer")
    p.add_argument("--json", default=None, help="also write the figures to this result file")
    args = p.parse_args()
    ds = create_dataset(args.dataset, args.root, args.split)
    n = len(ds)
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        decode_dataset(ds, args.size, args.grayscale, cache_dir=cache)  # decode + write the cache
        t_decode = time.perf_counter() - t
        t = time.perf_counter()
        data = decode_dataset(ds, args.size, args.grayscale, cache_dir=cache)
        t_cache = time.perf_counter() - t
    tf = BatchTransform((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), args.augment)
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for i in range(0, n, 64):
        tf(data.images[i:i + 64], train=True, generator=g)
    t_aug = time.perf_counter() - t
    print(f"{args.dataset}/{args.split}: {n} images at {args.size}px, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'path':28s} {'seconds':>8s} {'images/s':>10s}")
    paths = (("decode files (no cache)", t_decode), ("read uint8 cache", t_cache),
             (f"batched augment '{args.augment}'", t_aug))
    for name, sec in paths:
        print(f"{name:28s} {sec:8.2f} {n / sec:10.0f}")
    print(f"speed-up of the cache over decoding: {t_decode / t_cache:.1f}x")
    if args.json:
        write_json(args.json, run_record("loader_cache") | {
            "threads": torch.get_num_threads(), "dataset": args.dataset, "split": args.split, "images": n,
            "size": args.size, "grayscale": args.grayscale, "augment": args.augment,
            "rows": [{"path": name, "seconds": sec, "images_per_second": n / sec} for name, sec in paths],
            "cache_speedup": t_decode / t_cache})


if __name__ == "__main__":
    main()
