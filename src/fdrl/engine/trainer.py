"""Training: one CPU, one GPU, or many through ``torchrun`` (DistributedDataParallel).

Design points (each one a bug research code ships):
- model selection on the validation split only; the test split is evaluated once, at the end, for both
  ``best.pt`` (by validation accuracy) and ``last.pt``;
- the epoch order and augmentation draws are pure functions of (seed, epoch, rank), so ``--resume`` from
  ``last.pt`` continues exactly, and CPU runs are bit-reproducible;
- checkpoints are written atomically and only by rank 0; a NaN/inf loss stops the run before anything is
  written, leaving the last good checkpoint intact;
- the loss centres are updated identically on every rank (the criterion all-reduces its sums).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import atomic_save, make_checkpoint, model_from_checkpoint, read_checkpoint
from ..config import TrainConfig, dump_yaml, to_dict
from ..data.mix import mix_batch
from ..data.registry import create_dataset, has_official_val
from ..data.tensors import BatchTransform, TensorSet, decode_dataset
from ..errors import DataError
from ..losses import create_criterion
from ..models import create_model
from ..optim import build_optimizer, build_scheduler
from .amp import amp_dtype as _amp_dtype
from .amp import resolve_amp
from .evaluate import predict, tta_metrics
from .report import classification_metrics, plot_curves, write_report


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, leaking splits, ...)."""


class TrainingStopped(RuntimeError):
    """Raised by ``train.stop_after_steps``: the run stops as if killed, after its last epoch checkpoint."""


def weights_digest(model: nn.Module) -> str:
    """A hash of every parameter and buffer: equal digests mean bit-identical weights."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> tuple[DistInfo, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (if any) and pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo()
    cuda = (torch.cuda.is_available() and device_pref in ("auto", "cuda")) or device_pref.startswith("cuda:")
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if cuda:
        device = torch.device(device_pref if device_pref.startswith("cuda:") else f"cuda:{info.local_rank}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return info, device


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Progress:
    """A one-line progress bar on a TTY, plain lines every ``every`` steps otherwise."""

    def __init__(self, total: int, prefix: str, every: int, enabled: bool) -> None:
        self.total, self.prefix, self.every, self.enabled = total, prefix, every, enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.time()

    def update(self, step: int, images: int, text: str) -> None:
        if not self.enabled:
            return
        rate = images / max(1e-9, time.time() - self.t0)
        line = f"{self.prefix} {step}/{self.total} {rate:7.1f} img/s {text}"
        if self.tty:
            bar = "#" * int(20 * step / max(1, self.total))
            print(f"\r{line} [{bar:<20s}]", end="", file=sys.stderr, flush=True)
            if step == self.total:
                print(file=sys.stderr)
        elif step % self.every == 0 or step == self.total:
            print(line, file=sys.stderr, flush=True)


def load_splits(cfg: TrainConfig, log) -> dict[str, TensorSet]:
    """Decode train/val/test into uint8 tensors; refuse overlapping ids between them."""
    d, p = cfg.data, cfg.data.preprocessing
    soft = cfg.data.options.get("label_mode") == "distribution"
    common = dict(on_error=d.on_error, val_fraction=d.val_fraction, seed=cfg.train.seed, **d.options)
    out: dict[str, TensorSet] = {}
    train_split = d.train_split
    if train_split == "train" and d.val_split == "val" and not has_official_val(d.dataset, d.root):
        train_split = "train/fit"  # "val" is carved from train here: train on the rest, never on both
        log(f"{d.dataset} has no validation split of its own: val = train/holdout "
            f"({d.val_fraction:.0%}, seeded), train = train/fit")
    for role, split in (("train", train_split), ("val", d.val_split), ("test", d.test_split)):
        if not split:
            continue
        ds = create_dataset(d.dataset, d.root, split, **common)
        ds.set_face_crop(d.face_detector, p.face_margin)
        if d.max_samples is not None and len(ds) > d.max_samples:
            step = len(ds) / d.max_samples
            ds = ds.subset([int(i * step) for i in range(d.max_samples)], ds.split)
        cache_dir = (d.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "fdrl")) if d.cache else None
        out[role] = decode_dataset(ds, p.input_size, p.grayscale, soft=soft and role == "train",
                                   cache_dir=cache_dir, log=log)
        excluded = ds.excluded
        log(f"data {role}: {ds.summary()}" + (f"; excluded by protocol {excluded}" if excluded else ""))
    train_ids = set(out["train"].ids)
    for role in ("val", "test"):
        if role in out:
            leak = train_ids & set(out[role].ids)
            if leak:
                raise TrainingError(f"{role} split {getattr(d, role + '_split')!r} shares {len(leak)} samples with "
                                    f"train (e.g. {sorted(leak)[:3]}); model selection/test would be contaminated")
    return out


def _epoch_order(n: int, seed: int, epoch: int, info: DistInfo, batch: int) -> list[torch.Tensor]:
    """This rank's batches for ``epoch``: a seeded permutation, padded so every rank has equal batches."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = -(-n // info.world)
    perm = torch.cat([perm, perm[: per_rank * info.world - n]])
    mine = perm[info.rank::info.world]
    nb = len(mine) // batch if len(mine) >= batch else 1  # drop the ragged last batch (BatchNorm of size 1)
    return [mine[i * batch:(i + 1) * batch] for i in range(nb)]


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train per ``cfg`` into ``out_dir``; returns the final summary (also written to summary.json)."""
    out = Path(out_dir)
    info, device = setup_distributed(cfg.train.device)
    log = (lambda msg: print(msg, flush=True)) if info.main else (lambda msg: None)
    t = cfg.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    torch.manual_seed(t.seed)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_yaml(cfg))
    data = load_splits(cfg, log)
    classes = data["train"].classes
    prep = cfg.data.preprocessing
    model = create_model(cfg.model_name, num_classes=len(classes), **cfg.model).to(device)
    criterion = create_criterion(model, cfg.loss).to(device)
    optimizer = build_optimizer(model, criterion, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, t.epochs)
    if t.init_from and not resume:
        init_from_checkpoint(model, t.init_from, log)
    start_epoch, best_acc, history = 0, -1.0, []
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume:
        if not last_path.is_file():
            raise TrainingError(f"--resume: {last_path} does not exist")
        ck = read_checkpoint(last_path, map_location="cpu")
        if ck["model_name"] != cfg.model_name:
            raise TrainingError(f"--resume: {last_path} holds {ck['model_name']}, config asks for {cfg.model_name}")
        model.load_state_dict(model_from_checkpoint(ck, str(last_path)).state_dict())
        criterion.load_state_dict(ck["criterion_state"])
        optimizer.load_state_dict(ck["optimizer_state"])
        scheduler.load_state_dict(ck["scheduler_state"])
        start_epoch, best_acc, history = ck["epoch"], ck["best_val_accuracy"], list(ck["history"])
        log(f"resumed from {last_path} at epoch {start_epoch}")
    commit, versions = git_commit(), {"torch": str(torch.__version__), "cuda": torch.version.cuda}
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if info.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if t.compile:
        net = torch.compile(net)
    transform = BatchTransform(prep.mean, prep.std, cfg.data.augment)
    amp = resolve_amp(t.amp, device)
    amp_dtype = _amp_dtype(amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    tb = _tensorboard(out) if info.main else None
    train_set = data["train"]
    criterion.set_class_prior(torch.bincount(train_set.labels, minlength=len(classes)))
    log(f"training {cfg.model_name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params) on {device}"
        f" x{info.world}, {len(train_set)} train images, {t.epochs} epochs, batch {t.batch_size}/rank, amp {amp}"
        + (f" (from {t.amp})" if t.amp != amp else ""))

    def snapshot(epoch: int, metrics: dict) -> dict:
        return make_checkpoint(model, classes, prep, criterion, optimizer, scheduler, epoch, cfg, metrics,
                               extra={"best_val_accuracy": best_acc, "history": history, "git_commit": commit})

    global_step = 0
    for epoch in range(start_epoch, t.epochs):
        net.train()
        criterion.train()
        batches = _epoch_order(len(train_set), t.seed, epoch, info, t.batch_size)
        if t.max_steps_per_epoch:
            batches = batches[: t.max_steps_per_epoch]
        gen = torch.Generator().manual_seed(t.seed * 7919 + epoch * 131 + info.rank)
        sums = {k: torch.zeros((), device=device) for k in ("loss", "cls", "compactness", "balance", "distribution")}
        correct, seen = torch.zeros((), device=device), 0
        bar = Progress(len(batches), f"epoch {epoch + 1}/{t.epochs}", t.log_every, info.main)
        t0 = time.time()
        for step, bi in enumerate(batches, 1):
            x = transform(train_set.images[bi].to(device, non_blocking=True), train=True, generator=gen)
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = train_set.targets[bi].to(device)
            x, y = mix_batch(x, y, len(classes), t.mix, t.mix_alpha, generator=gen)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                output = net(x)
            parts = criterion(output, y)
            loss = parts["loss"]
            if not torch.isfinite(loss):
                values = {k: float(v.detach()) for k, v in parts.items()}
                raise TrainingError(
                    f"non-finite loss ({loss.item()}) at epoch {epoch + 1} step {step} (parts: {values}); stopping. "
                    f"The last good checkpoint {last_path if last_path.exists() else '(none yet)'} is intact. "
                    f"Lower optim.lr or disable amp.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            global_step += 1
            if t.stop_after_steps is not None and global_step >= t.stop_after_steps:
                raise TrainingStopped(f"stopped after {global_step} steps (train.stop_after_steps)")
            for k in sums:
                sums[k] += parts[k].detach() * len(bi)
            labels = y.argmax(-1) if y.dim() == 2 else y
            correct += (output.logits.argmax(-1) == labels).sum()
            seen += len(bi)
            if step % t.log_every == 0 or step == len(batches):
                bar.update(step, seen, f"loss {sums['loss'].item() / seen:.4f} cls {sums['cls'].item() / seen:.4f} "
                                       f"lr {optimizer.param_groups[0]['lr']:.2e}")
        stats = torch.stack([*sums.values(), correct, torch.tensor(float(seen), device=device)])
        if info.world > 1:
            dist.all_reduce(stats)
            # DDP broadcasts buffers at the start of each forward, so after the last step every rank holds its
            # own BatchNorm running statistics: take rank 0's, so all ranks (and the checkpoint) agree.
            for buf in model.buffers():
                dist.broadcast(buf, src=0)
        n_seen = stats[-1].item()
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                               "epoch_seconds": round(time.time() - t0, 2),
                               "images_per_second": round(n_seen / max(1e-9, time.time() - t0), 1)}
        for k, v in zip(sums, stats[: len(sums)], strict=True):
            row[f"train_{k}"] = v.item() / n_seen
        row["train_accuracy"] = stats[len(sums)].item() / n_seen
        if "val" in data:
            res = predict(model, data["val"], transform, device, t.eval_batch_size, "none", amp, t.channels_last,
                          keep_features=False)
            m = classification_metrics(res["preds"], res["labels"], classes)
            p_true = res["probs"][np.arange(len(res["labels"])), res["labels"]]
            row.update(val_accuracy=m["accuracy"], val_mean_class_accuracy=m["mean_class_accuracy"],
                       val_loss=float(-np.log(np.clip(p_true, 1e-12, None)).mean()))  # cross-entropy
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if "val_accuracy" not in row:
                raise TrainingError("sched.name=plateau needs a validation split (data.val_split)")
            scheduler.step(row["val_accuracy"])
        else:
            scheduler.step()
        history.append(row)
        improved = "val_accuracy" in row and row["val_accuracy"] > best_acc
        if improved:
            best_acc = row["val_accuracy"]
        log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if info.main:
            with (out / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            if tb is not None:
                for k, v in row.items():
                    if k != "epoch":
                        tb.add_scalar(k, v, epoch + 1)
            ck = snapshot(epoch + 1, row)
            if improved or "val" not in data:
                atomic_save(ck, best_path)
            atomic_save(ck, last_path)
        if info.world > 1:
            dist.barrier()
    trained_digest = weights_digest(model)  # before finish() loads best/last: the weights this rank trained
    summary = finish(cfg, out, data, model, transform, device, info, log, versions, commit)
    summary["final_weights_digest"] = trained_digest
    if tb is not None:
        tb.close()
    return summary


def init_from_checkpoint(model: nn.Module, path: str, log) -> None:
    """Copy every weight of an fdrl checkpoint whose name and shape match (a new class count re-initialises
    only the classifier); anything else missing is an error, not a silent partial load."""
    ck = read_checkpoint(path)
    if ck["model_name"] != model.model_name:
        raise TrainingError(f"init_from {path}: holds {ck['model_name']}, this run trains {model.model_name}")
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) for k, v in ck["model_state"].items() if k in own and v.shape == own[k].shape}
    skipped = sorted(set(own) - set(state))
    if any(not k.startswith("classifier.") for k in skipped):
        raise TrainingError(f"init_from {path}: incompatible weights {skipped[:8]}")
    model.load_state_dict(state, strict=False)
    log(f"initialised from {path}" + (f" (re-initialised {skipped})" if skipped else ""))


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def finish(cfg: TrainConfig, out: Path, data: dict[str, TensorSet], model: nn.Module, transform: BatchTransform,
           device: torch.device, info: DistInfo, log, versions: dict, commit: str | None) -> dict[str, Any]:
    """Evaluate best.pt and last.pt once on the test split; write the report of the selected one."""
    t = cfg.train
    amp = resolve_amp(t.amp, device)
    classes = data["train"].classes
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] if info.main else []
    summary: dict[str, Any] = {"model_name": cfg.model_name, "dataset": cfg.data.dataset, "select": t.select,
                               "epochs": t.epochs, "world_size": info.world, "device": str(device),
                               "versions": versions, "git_commit": commit, "config": to_dict(cfg)}
    if info.main:
        summary["train_seconds"] = round(sum(h["epoch_seconds"] for h in history), 1)
        plot_curves(history, out / "curves.png")
    for which in ("best", "last"):
        ck = read_checkpoint(out / f"{which}.pt", map_location="cpu")
        model.load_state_dict(model_from_checkpoint(ck, which).state_dict())
        summary[which] = {"epoch": ck["epoch"], "val_accuracy": ck["metrics"].get("val_accuracy"),
                          "val_mean_class_accuracy": ck["metrics"].get("val_mean_class_accuracy")}
        if "test" not in data:
            continue
        res = predict(model, data["test"], transform, device, t.eval_batch_size, "none", amp, t.channels_last)
        extra = {"epoch": ck["epoch"], "tta": "none"}
        if t.tta != "none":
            extra.update(tta_metrics(model, data["test"], transform, device, t.eval_batch_size, t.tta, amp,
                                     t.channels_last))
        if info.main:
            m = write_report(out / f"report_{which}", res, classes, cfg.data.test_split, str(out / f"{which}.pt"),
                             tsne_on=cfg.report.tsne, tsne_max=cfg.report.tsne_max_samples, plots=cfg.report.plots,
                             extra=extra)
            summary[which].update(test_accuracy=m["accuracy"], test_mean_class_accuracy=m["mean_class_accuracy"],
                                  **{k: v for k, v in extra.items() if k.startswith(("accuracy_", "mean_class"))})
            summary[which]["num_test_samples"] = m["num_samples"]
    if info.main:
        sel = summary["best" if t.select == "val" else "last"]
        summary["selected"] = "best" if t.select == "val" else "last"
        summary["test_accuracy"] = sel.get("test_accuracy")
        summary["test_mean_class_accuracy"] = sel.get("test_mean_class_accuracy")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        log(f"done: {out / 'summary.json'}; selected {summary['selected']}.pt: test accuracy "
            f"{summary['test_accuracy']}, mean class accuracy {summary['test_mean_class_accuracy']} "
            f"(report in {out / ('report_' + summary['selected'])})")
    return summary


__all__ = ["TrainingError", "train", "DataError"]
