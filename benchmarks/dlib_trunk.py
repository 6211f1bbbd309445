"""dlib's face-recognition ResNet as a trunk: parameter count, smallest input, CPU/GPU throughput.

    pip install -e ".[face-trunk]"
    python benchmarks/dlib_trunk.py --sizes 150 112 --threads 1
    python benchmarks/dlib_trunk.py --device cuda --train
    python benchmarks/dlib_trunk.py --sizes 112 --threads 1 --json results/dlib_trunk.json   # also a result file

Throughput is images per second of the trunk (to the pooled 256-d feature): eval forward under inference_mode,
and with ``--train`` a full training step (forward, a linear head's cross-entropy, backward, Adam). The load
average is printed before and after, because on a shared machine it decides the figures.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from fdrl.models.dlib_resnet import DlibResNet29Trunk, compute_min_input_size, load_dlib_resnet
from fdrl.records import run_record, write_json


def probe_min_size(model: DlibResNet29Trunk) -> int:
    """The smallest square side the plain layers accept (the module's own size check switched off)."""
    model.min_input_size = 1
    side = 64
    with torch.no_grad():
        while True:
            try:
                model(torch.zeros(1, 3, side, side))
                break
            except RuntimeError:
                side += 1
    model.min_input_size = DlibResNet29Trunk.min_input_size
    return side


def rate(fn, images: int, seconds: float) -> float:
    fn()  # warm-up
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn()
        n += images
    return n / (time.perf_counter() - t0)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def forward_rate(model: DlibResNet29Trunk, x: torch.Tensor, seconds: float) -> float:
    def forward() -> None:
        with torch.inference_mode():
            model(x)
        _sync(x.device)

    return rate(forward, len(x), seconds)


def train_rate(x: torch.Tensor, seconds: float) -> float:
    """A fine-tuning step of the whole trunk with a linear 7-class head, fp32."""
    model = load_dlib_resnet().to(x.device).train()
    linear = torch.nn.Linear(model.num_features, 7).to(x.device)
    opt = torch.optim.Adam([*model.parameters(), *linear.parameters()], lr=1e-4)
    y = torch.randint(0, 7, (len(x),), device=x.device)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(linear(model(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(x.device)

    return rate(step, len(x), seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[150, 112])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--train", action="store_true", help="also time a training step (Adam, linear head)")
    p.add_argument("--json", default=None, help="also write the figures to this result file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"load average before: {load_before}, torch threads {torch.get_num_threads()}, {args.device}")
    model = load_dlib_resnet().to(args.device)
    head = load_dlib_resnet(descriptor_head=True)
    params = {"trunk": sum(p.numel() for p in model.parameters()),
              "with_descriptor_fc": sum(p.numel() for p in head.parameters())}
    print(f"parameters: trunk {params['trunk']:,}, with dlib's descriptor fc {params['with_descriptor_fc']:,}")
    min_side = {"computed": compute_min_input_size(), "probed": probe_min_size(head)}
    print(f"minimum input side: {min_side['computed']} px computed, {min_side['probed']} px probed")
    dev = torch.device(args.device)
    rows = []
    for size in args.sizes:
        x = torch.randn(args.batch_size, 3, size, size, device=dev)
        row = {"size": size, "batch": args.batch_size, "eval_images_per_second": forward_rate(model, x, args.seconds)}
        line = f"{size} px, batch {args.batch_size}: eval forward {row['eval_images_per_second']:.1f} img/s"
        if args.train:
            row["train_images_per_second"] = train_rate(x, args.seconds)
            line += f", training step {row['train_images_per_second']:.1f} img/s"
        rows.append(row)
        print(line, flush=True)
    load_after = os.getloadavg()
    print(f"load average after: {load_after}")
    if args.json:
        write_json(args.json, run_record("dlib_trunk") | {
            "device": args.device, "threads": torch.get_num_threads(), "seconds": args.seconds,
            "parameters": params, "min_input_side": min_side, "load_average": [load_before, load_after],
            "rows": rows})


if __name__ == "__main__":
    main()
