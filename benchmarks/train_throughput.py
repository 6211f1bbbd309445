"""Training throughput and peak memory of FDRL vs the plain ResNet-18 baseline, same batch and input size.

    python benchmarks/train_throughput.py --input-size 48 --batch-size 64            # CPU
    python benchmarks/train_throughput.py --device cuda --amp bf16 --channels-last   # GPU
    python benchmarks/train_throughput.py --input-size 48 --json results/train_throughput_48.json   # a result file

Each model runs in its own subprocess so that peak memory (CUDA: max allocated; CPU: max RSS) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from fdrl.records import run_record, write_json


def measure(args: argparse.Namespace) -> dict:
    import fdrl
    from fdrl.runtime import amp_dtype

    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = fdrl.create_model(args.only, num_classes=7, stem=args.stem).to(dev)
    crit = fdrl.create_criterion(model).to(dev).train()
    opt = fdrl.build_optimizer(model, crit, fdrl.OptimConfig())
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch_size, 3, args.input_size, args.input_size, device=dev)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (args.batch_size,), device=dev)
    dtype = amp_dtype(args.amp, dev)

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            out = model(x)
        loss = crit(out, y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": args.only, "images_per_second": args.steps * args.batch_size / dt,
            "ms_per_step": 1000 * dt / args.steps, "peak_memory_mb": peak / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--input-size", type=int, default=48)
    p.add_argument("--stem", choices=["imagenet", "small"], default="imagenet")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--json", default=None, help="also write the figures to this result file")
    p.add_argument("--only", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        print(json.dumps(measure(args)))
        return
    rows = []
    for name in ("baseline_resnet18", "fdrl_resnet18"):
        cmd = [sys.executable, __file__, "--only", name] + [
            a for a in sys.argv[1:] if a != "--only"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"training throughput, {dev}, torch {torch.__version__}, input {args.input_size}px, stem {args.stem}, batch "
          f"{args.batch_size}, amp {args.amp}, channels_last {args.channels_last}, {args.steps} timed steps")
    print(f"{'model':20s} {'img/s':>10s} {'ms/step':>10s} {'peak MB':>10s}")
    for r in rows:
        print(f"{r['model']:20s} {r['images_per_second']:10.1f} {r['ms_per_step']:10.1f} {r['peak_memory_mb']:10.1f}")
    b, f = rows
    print(f"ratio FDRL/baseline: throughput {f['images_per_second'] / b['images_per_second']:.3f}, "
          f"peak memory {f['peak_memory_mb'] / b['peak_memory_mb']:.3f}")
    if args.json:  # peak_memory_mb: CUDA max allocated, or the CPU process's max RSS
        write_json(args.json, run_record("train_throughput") | {
            "device": dev, "input_size": args.input_size, "stem": args.stem, "batch_size": args.batch_size,
            "steps": args.steps, "amp": args.amp, "channels_last": args.channels_last, "rows": rows})


if __name__ == "__main__":
    main()
