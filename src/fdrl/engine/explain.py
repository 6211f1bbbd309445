"""What each latent feature of an FDRL model looks at: per-class mean saliency of alpha_j (or ||l_j||).

FDRL's premise is that its M latent features capture facial actions shared across expressions (spec §1). This
module tests that picture directly: for every latent feature j it takes the gradient of alpha_j (the Intra-RM
importance weight) or of the latent norm ||l_j|| with respect to the input image, turns it into a saliency map,
and averages the maps per class over a validation set. :func:`plot_latent_grid` draws the M x K grid (rows:
latent features, columns: classes), each cell the class's mean face with that latent feature's mean map over it.

Each image's map is scaled to mean 1 over its pixels before averaging, so a value of 2 means "twice the share of
this latent feature's gradient that a uniform map would give this pixel", and an image with large gradients
does not outweigh the others. The raw scale is kept in :attr:`LatentMaps.magnitude`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..data.preprocess import BatchTransform
from ..data.tensors import TensorSet
from ..errors import ConfigError
from ..literals import check_choice
from ..runtime import resolve_device
from .report import _plt

Target = Literal["alpha", "latent_norm"]
Method = Literal["grad", "grad_x_input", "smoothgrad"]
TARGETS: tuple[str, ...] = get_args(Target)
METHODS: tuple[str, ...] = get_args(Method)


@dataclass
class LatentMaps:
    """Per-class mean saliency of every latent feature, with what a reader needs to draw and judge it."""

    saliency: np.ndarray  # (M, K, H, W) mean of per-image maps, each scaled to mean 1 (1 = uniform)
    mean_faces: np.ndarray  # (K, H, W) mean grey image of each class's samples, in [0, 1]
    mean_alpha: np.ndarray  # (K, M) mean importance weight alpha_j of each class's samples
    magnitude: np.ndarray  # (M, K) mean of the raw (unscaled) per-image map totals: the gradient's size
    counts: np.ndarray  # (K,) samples averaged per class
    classes: list[str]
    target: str
    method: str

    def save_npz(self, path: str | os.PathLike[str]) -> None:
        """The raw arrays, for re-plotting or comparing models."""
        np.savez_compressed(path, saliency=self.saliency, mean_faces=self.mean_faces, mean_alpha=self.mean_alpha,
                            magnitude=self.magnitude, counts=self.counts, classes=np.array(self.classes),
                            target=np.array(self.target), method=np.array(self.method))

    @classmethod
    def load_npz(cls, path: str | os.PathLike[str]) -> LatentMaps:
        with np.load(path) as z:
            return cls(z["saliency"], z["mean_faces"], z["mean_alpha"], z["magnitude"], z["counts"],
                       [str(c) for c in z["classes"]], str(z["target"]), str(z["method"]))


def has_latent_features(model: nn.Module) -> bool:
    """Whether ``model`` decomposes its feature into latent features (FDRL) rather than being a plain baseline."""
    return getattr(getattr(model, "config", None), "num_latent", None) is not None


def _no_latent_features(model: nn.Module, source: str | None = None) -> ConfigError:
    name = getattr(model, "model_name", type(model).__name__)
    return ConfigError(f"{source + ': ' if source else ''}model {name!r} has no latent features to explain "
                       f"(an FDRL checkpoint is needed, not a baseline)")


@contextlib.contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode (batch norm uses its running statistics: samples stay independent within a batch) and no
    parameter gradients (only input gradients are wanted), both restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _targets(model: nn.Module, x: torch.Tensor, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M) values whose gradients are wanted, and alpha (B, M)."""
    out = model(x)
    if out.alpha is None or out.latent is None:
        raise _no_latent_features(model)
    values = out.alpha if target == "alpha" else out.latent.norm(dim=-1)
    return values, out.alpha


def _gradient_maps(model: nn.Module, x: torch.Tensor, target: str, times_input: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M, H, W) maps from M backward passes (one per latent feature), and alpha (B, M).

    The gradient of the batch sum of t_j is every sample's own gradient: in eval mode no sample sees another.
    ``grad``: max over colour channels of |dt_j/dx| (Simonyan et al. 2014); ``times_input``: |sum_c x_c dt_j/dx_c|
    on the normalised input, i.e. attribution against the data set's mean colour (x = 0).
    """
    x = x.detach().requires_grad_(True)
    values, alpha = _targets(model, x, target)
    m = values.shape[1]
    maps = []
    for j in range(m):
        (g,) = torch.autograd.grad(values[:, j].sum(), x, retain_graph=j < m - 1)
        maps.append((g * x).sum(1).abs() if times_input else g.abs().amax(1))
    return torch.stack(maps, 1).detach(), alpha.detach()


def _batch_maps(model: nn.Module, x: torch.Tensor, target: str, method: str, smooth_samples: int,
                smooth_sigma: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if method != "smoothgrad":
        return _gradient_maps(model, x, target, method == "grad_x_input")
    # SmoothGrad (Smilkov et al. 2017): the mean gradient map over noisy copies, noise sigma a fraction of each
    # image's value range; alpha is the clean image's.
    with torch.no_grad():
        _, alpha = _targets(model, x, target)
    span = (x.amax(dim=(1, 2, 3), keepdim=True) - x.amin(dim=(1, 2, 3), keepdim=True)) * smooth_sigma
    total = torch.zeros(0)
    for _ in range(smooth_samples):
        noise = torch.randn(x.shape, generator=generator).to(x.device) * span
        maps, _ = _gradient_maps(model, x + noise, target, False)
        total = maps if total.numel() == 0 else total + maps
    return total / smooth_samples, alpha


def pick_per_class(labels: torch.Tensor, num_classes: int, max_per_class: int | None, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_per_class`` samples of each class (a seeded random choice), in data order."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for k in range(num_classes):
        idx = torch.nonzero(labels == k).flatten()
        if max_per_class is not None and len(idx) > max_per_class:
            idx = idx[torch.randperm(len(idx), generator=g)[:max_per_class]]
        chosen.append(idx)
    return torch.sort(torch.cat(chosen)).values.numpy()


def _grey(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> (B, H, W) in [0, 1] (ITU-R 601 luma for colour, as PIL's "L")."""
    x = images.float() / 255.0
    if x.shape[1] == 1:
        return x[:, 0]
    return (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)


def latent_saliency(model: nn.Module, data: TensorSet, transform: BatchTransform, device: torch.device, *,
                    max_per_class: int | None = 100, target: Target = "alpha", method: Method = "grad",
                    batch_size: int = 64, smooth_samples: int = 8, smooth_sigma: float = 0.15, seed: int = 0,
                    log: Callable[[str], None] | None = None) -> LatentMaps:
    """Per-class mean saliency of each latent feature's ``target`` over ``data`` (up to ``max_per_class`` samples
    of each class, chosen with ``seed``); ``transform`` is the checkpoint's normalisation. See the module text."""
    check_choice(Target, target, "target")
    check_choice(Method, method, "method")
    if not has_latent_features(model):
        raise _no_latent_features(model)
    k, m = len(data.classes), model.config.num_latent
    idx = torch.from_numpy(pick_per_class(data.labels, k, max_per_class, seed))
    if len(idx) == 0:
        raise ConfigError("no samples to explain: the split has no labelled samples of its classes")
    labels = data.labels[idx]
    h, w = data.images.shape[-2:]
    sal_sum = torch.zeros(m, k, h, w, dtype=torch.float64)
    mag_sum = torch.zeros(m, k, dtype=torch.float64)
    alpha_sum = torch.zeros(k, m, dtype=torch.float64)
    face_sum = torch.zeros(k, h, w, dtype=torch.float64)
    counts = torch.bincount(labels, minlength=k)
    gen = torch.Generator().manual_seed(seed)
    model = model.to(device)
    with _frozen_eval(model):
        for start in range(0, len(idx), batch_size):
            bi = idx[start:start + batch_size]
            faces = data.rows(bi)
            x = transform(faces.to(device), train=False)
            maps, alpha = _batch_maps(model, x, target, method, smooth_samples, smooth_sigma, gen)
            maps, alpha = maps.double().cpu(), alpha.double().cpu()
            total = maps.sum(dim=(2, 3))  # (B, M)
            scaled = maps / (total / (h * w)).clamp_min(1e-30)[..., None, None]  # mean 1 per image; 0 stays 0
            onehot = torch.nn.functional.one_hot(labels[start:start + batch_size], k).double()  # (B, K)
            sal_sum += torch.einsum("bk,bmhw->mkhw", onehot, scaled)
            mag_sum += torch.einsum("bk,bm->mk", onehot, total)
            alpha_sum += onehot.T @ alpha
            face_sum += torch.einsum("bk,bhw->khw", onehot, _grey(faces).double())
            if log is not None:
                log(f"explain: {min(start + batch_size, len(idx))}/{len(idx)} faces")
    n = counts.double().clamp_min(1)
    return LatentMaps(
        saliency=(sal_sum / n.view(1, k, 1, 1)).float().numpy(),
        mean_faces=(face_sum / n.view(k, 1, 1)).float().numpy(),
        mean_alpha=(alpha_sum / n.view(k, 1)).float().numpy(),
        magnitude=(mag_sum / n.view(1, k)).float().numpy(),
        counts=counts.numpy(),
        classes=list(data.classes),
        target=target,
        method=method,
    )


def _mean_offdiag_corr(rows: np.ndarray) -> float:
    """Mean Pearson correlation between distinct rows of (R, D); nan when fewer than two rows vary."""
    rows = rows[rows.std(1) > 0]
    if len(rows) < 2:
        return float("nan")
    c = np.corrcoef(rows)
    return float(c[~np.eye(len(rows), dtype=bool)].mean())


def map_similarity(maps: LatentMaps) -> dict[str, float]:
    """How alike the maps are: between latent features within a class, and between classes for one latent
    feature (mean pairwise Pearson r over pixels). Latent features that look at the same place give r near 1."""
    s = maps.saliency.reshape(*maps.saliency.shape[:2], -1)  # (M, K, HW)
    present = maps.counts > 0
    within = [_mean_offdiag_corr(s[:, k]) for k in range(s.shape[1]) if present[k]]
    across = [_mean_offdiag_corr(s[j][present]) for j in range(s.shape[0])]
    return {"between_latent_features": float(np.nanmean(within)) if within else float("nan"),
            "between_classes": float(np.nanmean(across)) if across else float("nan")}


def plot_latent_grid(maps: LatentMaps, path: str | os.PathLike[str], title: str | None = None,
                     vmax: float | None = None) -> None:
    """The M x K grid: each class's mean face under each latent feature's mean map, one shared colour scale
    (up to ``vmax``, default the 99.5th percentile), the cell's mean alpha_j in its corner."""
    plt = _plt()
    m, k = maps.saliency.shape[:2]
    vmax = float(np.percentile(maps.saliency, 99.5)) if vmax is None else vmax
    fig, axes = plt.subplots(m, k, figsize=(1.0 * k + 1.2, 1.0 * m + 0.8), squeeze=False, layout="constrained")
    image = None
    for j in range(m):
        for c in range(k):
            ax = axes[j, c]
            ax.imshow(maps.mean_faces[c], cmap="gray", vmin=0, vmax=1)
            image = ax.imshow(maps.saliency[j, c], cmap="jet", alpha=0.5, vmin=0, vmax=max(vmax, 1e-12))
            ax.text(0.03, 0.97, f"\u03b1 {maps.mean_alpha[c, j]:.3g}", transform=ax.transAxes, fontsize=6,
                    va="top", ha="left", color="white", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1,
                                                              "linewidth": 0})
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_title(f"{maps.classes[c]}\n(n={int(maps.counts[c])})", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"l{j + 1}", fontsize=8)
    what = "\u03b1_j" if maps.target == "alpha" else "||l_j||"
    fig.suptitle(title or f"saliency of {what} ({maps.method}), mean per class", fontsize=9)
    cbar = fig.colorbar(image, ax=axes, shrink=0.5, pad=0.02)
    cbar.set_label("saliency density (1 = uniform)", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def explain_checkpoint(checkpoint: str | os.PathLike[str], dataset: str, root: str | None, split: str = "val", *,
                       out: str | os.PathLike[str] | None = None, max_per_class: int | None = 100,
                       target: Target = "alpha", method: Method = "grad", options: dict[str, Any] | None = None,
                       face_detector: str | None = None, device: str = "auto", batch_size: int = 64, seed: int = 0,
                       log: Callable[[str], None] = print) -> LatentMaps:
    """The library form of ``fdrl explain``: the split built as :func:`~fdrl.engine.evaluate.evaluate_checkpoint`
    builds it (the checkpoint's preprocessing), then :func:`latent_saliency`; with ``out``, also
    ``latent_maps.png`` and ``latent_maps.npz`` there."""
    from .evaluate import checkpoint_split

    check_choice(Target, target, "target")
    check_choice(Method, method, "method")
    dev = resolve_device(device)  # a device this machine lacks fails before any image is decoded
    loaded = load_checkpoint(checkpoint)
    if not has_latent_features(loaded.model):
        raise _no_latent_features(loaded.model, os.fspath(checkpoint))
    _, d, data = checkpoint_split(loaded, dataset, root, split, options=options, face_detector=face_detector,
                                  log=log)
    prep = d.preprocessing
    maps = latent_saliency(loaded.model, data, BatchTransform(prep.mean, prep.std), dev,
                           max_per_class=max_per_class, target=target, method=method, batch_size=batch_size,
                           seed=seed, log=log)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        maps.save_npz(out / "latent_maps.npz")
        plot_latent_grid(maps, out / "latent_maps.png", title=f"{Path(checkpoint).name} on {dataset}/{split}: "
                         f"saliency of {'alpha_j' if target == 'alpha' else '||l_j||'} ({method}), mean per class")
    return maps
