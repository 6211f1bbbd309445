"""Evaluation metrics and the report files (metrics.json, confusion matrix, alpha by class, t-SNE, curves)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .decomposition import decomposition_metrics, summary_line


def classification_metrics(preds: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / max(1, cm.sum())),
        "mean_class_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
        "num_samples": int(cm.sum()),
    }


def alpha_by_class(alpha: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(K, M) mean importance weight of each latent feature per true class."""
    return np.stack([alpha[labels == c].mean(0) if (labels == c).any() else np.full(alpha.shape[1], np.nan)
                     for c in range(k)])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    plt = _plt()
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(classes), 0.8 + 0.7 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def alpha_names(m: int) -> list[str]:
    """The names of the ``m`` latent features' weights, the same in the CSV header and the plot's ticks."""
    return [f"alpha_{j + 1}" for j in range(m)]


def plot_alpha(table: np.ndarray, classes: list[str], path: Path, title: str):
    """The mean weight of each latent feature per class; returns the (closed) figure for inspection."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * table.shape[1], 1.0 + 0.5 * len(classes)))
    im = ax.imshow(table, cmap="viridis", aspect="auto")
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            ax.text(j, i, f"{table[i, j]:.3f}", ha="center", va="center", fontsize=6, color="white")
    ax.set_xticks(range(table.shape[1]), alpha_names(table.shape[1]), rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("latent feature")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="mean alpha")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def tsne(x: np.ndarray, perplexity: float = 30.0, iters: int = 500, seed: int = 0) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton 2008) in torch; fine for the <= few thousand points we plot."""
    g = torch.Generator().manual_seed(seed)
    X = torch.as_tensor(x, dtype=torch.float64)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    n = X.shape[0]
    d2 = torch.cdist(X, X).pow(2)
    target = np.log(min(perplexity, max(2.0, (n - 1) / 3)))
    beta = torch.ones(n, dtype=torch.float64)
    lo, hi = torch.full_like(beta, 0.0), torch.full_like(beta, float("inf"))
    eye = torch.eye(n, dtype=torch.bool)
    for _ in range(50):  # binary search of each point's precision for the perplexity
        p = torch.exp(-d2 * beta[:, None]).masked_fill(eye, 0)
        sp = p.sum(1).clamp_min(1e-12)
        h = torch.log(sp) + beta * (d2 * p).sum(1) / sp
        up = h > target
        lo = torch.where(up, beta, lo)
        hi = torch.where(up, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    P = p / sp[:, None]
    P = ((P + P.T) / (2 * n)).clamp_min(1e-12)
    Y = torch.randn(n, 2, generator=g, dtype=torch.float64) * 1e-4
    vel = torch.zeros_like(Y)
    for it in range(iters):
        ex = 12.0 if it < 100 else 1.0
        num = 1.0 / (1.0 + torch.cdist(Y, Y).pow(2))
        num = num.masked_fill(eye, 0)
        Q = (num / num.sum()).clamp_min(1e-12)
        grad = 4 * (((ex * P - Q) * num)[:, :, None] * (Y[:, None] - Y[None])).sum(1)
        vel = (0.5 if it < 250 else 0.8) * vel - 200.0 * grad
        Y = Y + vel
    return Y.numpy()


def plot_tsne(features: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, title: str,
              max_samples: int = 2000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(labels))[:max_samples]
    emb = tsne(features[idx], seed=seed)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5))
    for c, name in enumerate(classes):
        m = labels[idx] == c
        ax.scatter(emb[m, 0], emb[m, 1], s=4, label=name)
    ax.legend(markerscale=3, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(history: list[dict[str, Any]], path: Path):
    """Loss and accuracy per epoch, side by side; returns the (closed) figure for inspection, None without
    history."""
    if not history:
        return None
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train loss (total)")
    a.plot(ep, [h["train_cls"] for h in history], label="train loss (cls)")
    if "val_loss" in history[0]:
        a.plot(ep, [h["val_loss"] for h in history], label="val loss (cls)")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.set_title("loss", fontsize=9)
    a.legend()
    b.plot(ep, [h["train_accuracy"] for h in history], label="train accuracy")
    if "val_accuracy" in history[0]:
        b.plot(ep, [h["val_accuracy"] for h in history], label="val accuracy")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.set_title("accuracy", fontsize=9)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def evaluation_metrics(result: dict[str, Any], classes: list[str], split: str, checkpoint: str,
                       extra: dict | None = None) -> dict[str, Any]:
    """What ``metrics.json`` holds for one evaluation ``result`` from :func:`fdrl.engine.evaluate.predict`."""
    metrics = classification_metrics(result["preds"], result["labels"], classes)
    metrics.update({"split": split, "checkpoint": checkpoint})
    if extra:
        metrics.update(extra)
    if result.get("alpha") is not None:
        metrics["alpha_by_class"] = alpha_by_class(result["alpha"], result["labels"], len(classes)).tolist()
        metrics["decomposition"] = decomposition_metrics(result["alpha"], result["labels"], len(classes),
                                                         result.get("latent_cosine"), result.get("latent_rank"))
    return metrics


def write_report(out_dir: Path, result: dict[str, Any], classes: list[str], split: str, checkpoint: str,
                 tsne_on: bool = True, tsne_max: int = 2000, plots: bool = True, extra: dict | None = None) -> dict:
    """Write metrics.json (+ plots) for one evaluation ``result`` from :func:`fdrl.engine.evaluate.predict`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = evaluation_metrics(result, classes, split, checkpoint, extra)
    title = f"{Path(checkpoint).name} on {split}: acc {metrics['accuracy']:.4f}"
    if "alpha_by_class" in metrics:
        table = np.array(metrics["alpha_by_class"])
        with (out_dir / "alpha_by_class.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["class", *alpha_names(table.shape[1])])
            for c, row in zip(classes, table, strict=True):
                w.writerow([c, *[f"{v:.6f}" for v in row]])
        if plots:
            plot_alpha(table, classes, out_dir / "alpha_by_class.png",
                       f"mean intra-feature weight alpha per class\n{title}")
    if "decomposition" in metrics:
        (out_dir / "decomposition.txt").write_text(summary_line(metrics["decomposition"]) + "\n")
    if plots:
        plot_confusion(np.array(metrics["confusion_matrix"]), classes, out_dir / "confusion_matrix.png", title)
        if tsne_on and result.get("features") is not None:
            plot_tsne(result["features"], result["labels"], classes, out_dir / "tsne.png",
                      f"t-SNE of expression features\n{title}", tsne_max)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
