"""Training: one CPU, one GPU, or many through ``torchrun`` (DistributedDataParallel).

Design points (each one a bug research code ships):
- model selection on the validation split only; the test split is evaluated once, at the end, for both
  ``best.pt`` (by validation accuracy) and ``last.pt``;
- the epoch order and augmentation draws are pure functions of (seed, epoch, rank), so ``--resume`` from
  ``last.pt`` continues exactly, and CPU runs are bit-reproducible;
- checkpoints are written atomically and only by rank 0; a NaN/inf loss stops the run before anything is
  written, leaving the last good checkpoint intact;
- the loss centres stay identical on every rank: the Wen rule all-reduces its sums (in the criterion), and
  learned centres, which DDP does not wrap, have their gradients averaged over ranks before each step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import atomic_save, make_checkpoint, model_from_checkpoint, read_checkpoint, versions
from ..config import TrainConfig, TrainSection, dump_yaml, to_dict
from ..data.loading import load_splits, seen_faces, train_split_name
from ..data.mix import mix_batch
from ..data.preprocess import BatchTransform
from ..data.tensors import TensorSet
from ..errors import TrainingError, TrainingStopped
from ..losses import create_criterion
from ..models import create_model
from ..optim import build_optimizer, build_scheduler
from ..records import sha256_file
from ..runtime import (
    DistInfo,
    amp_dtype,
    average_gradients,
    git_commit,
    resolve_amp,
    seed_everything,
    setup_distributed,
    weights_digest,
    wrap_model,
)
from ..shipped import model_file
from .decomposition import EPOCH_FIGURES, batch_alpha_cv, decomposition_metrics
from .evaluate import predict, tta_metrics
from .report import classification_metrics, plot_curves, write_report


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


def epoch_batches(n: int, t: TrainSection, epoch: int, info: DistInfo) -> list[torch.Tensor]:
    """This rank's batches for ``epoch``: a seeded permutation, padded so every rank has equal batches."""
    g = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = -(-n // info.world)
    perm = torch.cat([perm, perm[: per_rank * info.world - n]])
    mine = perm[info.rank::info.world]
    b = t.batch_size
    nb = len(mine) // b if len(mine) >= b else 1  # drop the ragged last batch (BatchNorm of size 1)
    batches = [mine[i * b:(i + 1) * b] for i in range(nb)]
    return batches[: t.max_steps_per_epoch] if t.max_steps_per_epoch else batches


def train_one_epoch(net: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, data: TensorSet, batches: list[torch.Tensor],
                    transform: BatchTransform, device: torch.device, epoch: int, cfg: TrainConfig, info: DistInfo,
                    stop_after: int | None = None) -> dict[str, float]:
    """One pass over ``batches``; returns lr, speed, the mean of every loss part the criterion returns
    (``train_<part>``, reduced over ranks) and the training accuracy. ``stop_after``: raise
    :class:`TrainingStopped` after that many steps (the kill simulated by tests of ``--resume``)."""
    t = cfg.train
    net.train()
    criterion.train()
    dtype = amp_dtype(t.amp, device)
    gen = torch.Generator().manual_seed(t.seed * 7919 + epoch * 131 + info.rank)  # augmentation draws
    sums: dict[str, torch.Tensor] = {}
    correct, seen = torch.zeros((), device=device), 0
    bar = Progress(len(batches), f"epoch {epoch + 1}/{t.epochs}", t.log_every, info.main)
    t0 = time.time()
    for step, bi in enumerate(batches, 1):
        x = transform(data.rows(bi).to(device, non_blocking=True), train=True, generator=gen)
        y = data.targets[bi].to(device)
        x, y = mix_batch(x, y, len(data.classes), t.mix, t.mix_alpha, generator=gen)  # train.mix; soft targets
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            output = net(x)
        parts = criterion(output, y)
        loss = parts["loss"]
        if not torch.isfinite(loss):
            values = {k: float(v.detach()) for k, v in parts.items()}
            raise TrainingError(
                f"non-finite loss ({loss.item()}) at epoch {epoch + 1} step {step} (parts: {values}); stopping "
                f"before anything is written, so the run's last good checkpoint (last.pt) is intact. "
                f"Lower optim.lr or disable amp.")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        average_gradients(criterion, info)  # loss.centre_update=learned: outside DDP
        if cfg.optim.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if stop_after is not None and step >= stop_after:
            raise TrainingStopped(f"stopped at step {step} of epoch {epoch + 1} (train.stop_after_steps)")
        for k, v in parts.items():
            sums[k] = sums.get(k, 0) + v.detach() * len(bi)
        if output.alpha is not None:  # train_alpha_cv: when the weights go flat, without a validation split
            sums["alpha_cv"] = sums.get("alpha_cv", 0) + batch_alpha_cv(output.alpha)
        # the data set's labels, not the top class of a soft target (a teacher's, with data.teacher_targets)
        labels = data.labels[bi].to(device) if t.mix == "none" else y.argmax(-1) if y.dim() == 2 else y
        correct += (output.logits.argmax(-1) == labels).sum()
        seen += len(bi)
        if step % t.log_every == 0 or step == len(batches):
            text = " ".join(f"{k} {v.item() / seen:.4f}" for k, v in sums.items())
            bar.update(step, seen, f"{text} lr {optimizer.param_groups[0]['lr']:.2e}")
    stats = torch.stack([*sums.values(), correct, torch.tensor(float(seen), device=device)])
    if info.world > 1:
        dist.all_reduce(stats)
        # DDP broadcasts buffers at the start of each forward, so after the last step every rank holds its
        # own BatchNorm running statistics: take rank 0's, so all ranks (and the checkpoint) agree.
        for buf in net.buffers():
            dist.broadcast(buf, src=0)
    n_seen, seconds = stats[-1].item(), time.time() - t0
    row = {"lr": optimizer.param_groups[0]["lr"], "epoch_seconds": round(seconds, 2),
           "images_per_second": round(n_seen / max(1e-9, seconds), 1)}
    row.update({f"train_{k}": v.item() / n_seen for k, v in zip(sums, stats, strict=False)})
    row["train_accuracy"] = stats[len(sums)].item() / n_seen
    return row


def validate(model: nn.Module, data: TensorSet, transform: BatchTransform, device: torch.device,
             t: TrainSection) -> dict[str, float]:
    """Accuracy, mean class accuracy and cross-entropy on the validation split (the only input to selection),
    and for FDRL the decomposition figures (``val_alpha_cv``, ...), so a run's log shows when it collapses."""
    res = predict(model, data, transform, device, t.eval_batch_size, "none", t.amp, t.channels_last,
                  keep_features=False)
    m = classification_metrics(res["preds"], res["labels"], data.classes)
    p_true = res["probs"][np.arange(len(res["labels"])), res["labels"]]
    row = {"val_accuracy": m["accuracy"], "val_mean_class_accuracy": m["mean_class_accuracy"],
           "val_loss": float(-np.log(np.clip(p_true, 1e-12, None)).mean())}
    if res["alpha"] is not None:
        dec = decomposition_metrics(res["alpha"], res["labels"], len(data.classes), res["latent_cosine"],
                                    res["latent_rank"])
        row.update({f"val_{k}": float(v) for k, v in dec.items() if k in EPOCH_FIGURES})
    return row


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train per ``cfg`` into ``out_dir``; returns the final summary (also written to summary.json)."""
    out, t = Path(out_dir), cfg.train
    info, device = setup_distributed(t.device)
    log = (lambda msg: print(msg, flush=True)) if info.main else (lambda msg: None)
    seed_everything(t.seed, t.num_threads)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_yaml(cfg))
    data = load_splits(cfg, log)
    # which teacher targets train the run: recorded in every checkpoint and the summary, checked on --resume
    teacher_sha = sha256_file(cfg.data.teacher_targets) if cfg.data.teacher_targets else None
    classes, prep = data["train"].classes, cfg.data.preprocessing
    model = create_model(cfg.model_name, num_classes=len(classes), **cfg.model_options()).to(device)
    criterion = create_criterion(model, cfg.loss).to(device)
    optimizer = build_optimizer(model, criterion, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, t.epochs)
    criterion.set_class_prior(torch.bincount(data["train"].labels, minlength=len(classes)))  # loss.logit_adjust
    if t.init_from and not resume:
        refuse_seen_faces(init_from_checkpoint(model, t.init_from, log, t.init_parts), cfg, data, t.init_from)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(t.amp, device) is torch.float16)
    start_epoch, best_acc, history = 0, -1.0, []
    if resume:
        start_epoch, best_acc, history = resume_from(out / "last.pt", cfg, model, criterion, optimizer, scheduler,
                                                     scaler, teacher_sha)
        log(f"resumed from {out / 'last.pt'} at epoch {start_epoch}")
        if info.main:
            _trim_log(out, start_epoch)
    commit = git_commit()
    net = wrap_model(model, t.channels_last, t.compile, info, device)
    transform = BatchTransform(prep.mean, prep.std, cfg.data.augment)
    tb = _tensorboard(out) if info.main else None
    log(f"training {cfg.model_name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params) on {device}"
        f" x{info.world}, {len(data['train'])} train images, {t.epochs} epochs, batch {t.batch_size}/rank, "
        f"amp {resolve_amp(t.amp, device)}")
    steps = 0
    for epoch in range(start_epoch, t.epochs):
        batches = epoch_batches(len(data["train"]), t, epoch, info)
        stop = None if t.stop_after_steps is None else t.stop_after_steps - steps
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update(train_one_epoch(net, criterion, optimizer, scaler, data["train"], batches, transform, device,
                                   epoch, cfg, info, stop_after=stop))
        steps += len(batches)
        if "val" in data:
            row.update(validate(model, data["val"], transform, device, t))
        step_scheduler(scheduler, row)
        history.append(row)
        improved = "val_accuracy" in row and row["val_accuracy"] > best_acc
        best_acc = row["val_accuracy"] if improved else best_acc
        log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if info.main:
            _log_row(out, row, tb)
            ck = make_checkpoint(model, classes, prep, criterion, optimizer, scheduler, epoch + 1, cfg, row,
                                 extra={"best_val_accuracy": best_acc, "history": history, "git_commit": commit,
                                        "scaler_state": scaler.state_dict(),  # fp16 loss scale; {} when off
                                        **({"teacher_targets_sha256": teacher_sha} if teacher_sha else {})})
            if improved or "val" not in data:
                atomic_save(ck, out / "best.pt")
            atomic_save(ck, out / "last.pt")
        if info.world > 1:
            dist.barrier()
    trained_digest = weights_digest(model)  # before finish() loads best/last: the weights this rank trained
    criterion_digest = weights_digest(criterion)  # its centres, which finish() does not reload
    summary = finish(cfg, out, data, model, transform, device, info, log, commit)
    summary["final_weights_digest"] = trained_digest
    summary["final_criterion_digest"] = criterion_digest
    if tb is not None:
        tb.close()
    return summary


def step_scheduler(scheduler: Any, row: dict[str, Any]) -> None:
    """Once per epoch, after validation; reduce-on-plateau watches the validation accuracy."""
    if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step()
    elif "val_accuracy" in row:
        scheduler.step(row["val_accuracy"])
    else:
        raise TrainingError("sched.name=plateau needs a validation split (data.val_split)")


def resume_from(path: Path, cfg: TrainConfig, model: nn.Module, criterion: nn.Module,
                optimizer: torch.optim.Optimizer, scheduler: Any,
                scaler: torch.amp.GradScaler,
                teacher_sha: str | None = None) -> tuple[int, float, list[dict[str, Any]]]:
    """Load ``last.pt`` into the run's objects; returns (epochs done, best validation accuracy, history).
    The fp16 loss scale is restored where the checkpoint has one (older files and runs without fp16 do not).
    ``teacher_sha``: the sha256 of the run's ``data.teacher_targets`` file, which must be the one it began with."""
    if not path.is_file():
        raise TrainingError(f"--resume: {path} does not exist")
    ck = read_checkpoint(path, map_location="cpu")
    if ck["model_name"] != cfg.model_name:
        raise TrainingError(f"--resume: {path} holds {ck['model_name']}, config asks for {cfg.model_name}")
    if ck.get("teacher_targets_sha256") != teacher_sha:
        raise TrainingError(f"--resume: {path} was trained on teacher targets with sha256 "
                            f"{ck.get('teacher_targets_sha256')}, data.teacher_targets is now "
                            f"{cfg.data.teacher_targets} (sha256 {teacher_sha}); the run would not continue as it "
                            f"began")
    model.load_state_dict(model_from_checkpoint(ck, str(path)).state_dict())
    criterion.load_state_dict(ck["criterion_state"])
    optimizer.load_state_dict(ck["optimizer_state"])
    scheduler.load_state_dict(ck["scheduler_state"])
    if ck.get("scaler_state"):
        scaler.load_state_dict(ck["scaler_state"])
    return ck["epoch"], ck["best_val_accuracy"], list(ck["history"])


def _trim_log(out: Path, epochs_done: int) -> None:
    """Drop metrics.jsonl rows of epochs after ``last.pt``'s: a run killed between writing an epoch's row and its
    checkpoint redoes that epoch on resume, and a second row would count its time twice and fork the curves."""
    f = out / "metrics.jsonl"
    if f.is_file():
        rows = [line for line in f.read_text().splitlines() if line and json.loads(line)["epoch"] <= epochs_done]
        tmp = f.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(r + "\n" for r in rows))
        os.replace(tmp, f)


def _log_row(out: Path, row: dict[str, Any], tb: Any) -> None:
    with (out / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    if tb is not None:
        for k, v in row.items():
            if k != "epoch":
                tb.add_scalar(k, v, row["epoch"])


def init_from_checkpoint(model: nn.Module, path: str, log, parts: str = "all") -> dict[str, Any] | None:
    """Copy the weights of an fdrl checkpoint (a file, or a shipped model's name) into ``model``; returns the
    checkpoint's training config (``None`` if it has none). ``parts``:

    - ``all``: every weight of the same model; only the classifier may differ in shape (a new class count);
    - ``trunk``: only the trunk (``backbone.*``), from a checkpoint of any model on the same trunk;
    - ``matching``: every weight of the same model whose shape matches (e.g. a trained model's heads kept where a
      head option such as ``model.intra_out_dim`` changed one layer's shape); the rest start fresh, listed in the log.

    Anything else missing is an error, not a silent partial load."""
    path = os.fspath(model_file(path))
    ck = read_checkpoint(path)
    if parts != "trunk" and ck["model_name"] != model.model_name:
        raise TrainingError(f"init_from {path}: holds {ck['model_name']}, this run trains {model.model_name} "
                            f"(train.init_parts=trunk copies the trunk alone)")
    own = model.state_dict()
    wanted = {k for k in own if parts != "trunk" or k.startswith("backbone.")}
    state = {k: v.to(own[k].dtype) for k, v in ck["model_state"].items() if k in wanted and v.shape == own[k].shape}
    skipped = sorted(wanted - set(state))
    if parts != "matching" and any(not k.startswith("classifier.") for k in skipped):
        raise TrainingError(f"init_from {path}: incompatible weights {skipped[:8]} "
                            f"(train.init_parts=matching starts those fresh)")
    if parts == "matching" and not state:
        raise TrainingError(f"init_from {path}: no weight of {model.model_name} matches")
    model.load_state_dict(state, strict=False)
    log(f"initialised {'the trunk ' if parts == 'trunk' else ''}from {path}"
        + (f" (re-initialised {skipped})" if skipped else ""))
    return ck.get("config")


def refuse_seen_faces(init_config: dict[str, Any] | None, cfg: TrainConfig, data: dict[str, TensorSet],
                      path: str) -> None:
    """Refuse a fine-tune whose validation or test faces trained the model it starts from: a checkpoint trained
    on ``train/fit`` of one cut has seen ~90 % of another cut's ``train/holdout`` (``train.seed`` also seeds the
    cut), which would select and report on memorised faces."""
    found = seen_faces(init_config, cfg, data)
    if not found:
        return
    init, counts = found
    for role, n in counts.items():
        split = getattr(cfg.data, f"{role}_split")
        raise TrainingError(
            f"init_from {path}: {n} of the {len(data[role])} faces of {role} split {split!r} trained that "
            f"model (it was trained on {cfg.data.dataset} {train_split_name(init.data)!r} cut with seed "
            f"{init.split_seed}, val_fraction {init.data.val_fraction}; this run's cut: seed {cfg.split_seed}, "
            f"val_fraction {cfg.data.val_fraction}). Set data.split_seed={init.split_seed} and "
            f"data.val_fraction={init.data.val_fraction} to keep its held-out faces held out")


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def finish(cfg: TrainConfig, out: Path, data: dict[str, TensorSet], model: nn.Module, transform: BatchTransform,
           device: torch.device, info: DistInfo, log: Callable[[str], None], commit: str | None) -> dict[str, Any]:
    """Evaluate best.pt and last.pt once on the test split; write the report of the selected one."""
    t = cfg.train
    classes = data["train"].classes
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] if info.main else []
    summary: dict[str, Any] = {"model_name": cfg.model_name, "dataset": cfg.data.dataset, "select": t.select,
                               "epochs": t.epochs, "world_size": info.world, "device": str(device),
                               "versions": versions(), "git_commit": commit, "config": to_dict(cfg)}
    if info.main:
        summary["train_seconds"] = round(sum(h["epoch_seconds"] for h in history), 1)
        plot_curves(history, out / "curves.png")
    for which in ("best", "last"):
        ck = read_checkpoint(out / f"{which}.pt", map_location="cpu")
        model.load_state_dict(model_from_checkpoint(ck, which).state_dict())
        if ck.get("teacher_targets_sha256"):  # the targets file that trained it (data.teacher_targets)
            summary["teacher_targets_sha256"] = ck["teacher_targets_sha256"]
        summary[which] = {"epoch": ck["epoch"], "val_accuracy": ck["metrics"].get("val_accuracy"),
                          "val_mean_class_accuracy": ck["metrics"].get("val_mean_class_accuracy")}
        if "test" not in data:
            continue
        res = predict(model, data["test"], transform, device, t.eval_batch_size, "none", t.amp, t.channels_last)
        extra = {"epoch": ck["epoch"], "tta": "none"}
        if t.tta != "none":
            extra.update(tta_metrics(model, data["test"], transform, device, t.eval_batch_size, t.tta, t.amp,
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


__all__ = ["TrainingError", "TrainingStopped", "train", "train_one_epoch", "validate"]
