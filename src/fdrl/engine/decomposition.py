"""How much an FDRL model decomposes: figures on its intra weights alpha (B, M) and latent features l (B, M, P).

FDRL's premise is that the M latent features carry *different* parts of an expression and that Intra-RM weighs
them per face. A model can reach good accuracy while ignoring that structure (nine equal alpha, nine near-copies
of one latent feature); these figures tell the two apart and :func:`collapse_reasons` flags the second.

- ``alpha_cv``: per face, the coefficient of variation of its M alpha (std / mean across latent features),
  averaged over faces. 0 when every latent feature gets the same weight.
- ``alpha_class_spread``: how class-specific alpha is: the class means of alpha, each divided by its own sum
  (a share per latent feature), their standard deviation across classes, averaged over latent features and
  divided by the uniform share 1/M. 0 when every class weighs the latent features alike.
- ``argmax_class_mi`` / ``argmax_class_nmi``: mutual information (bits) between the most weighted latent feature
  of a face and its class, and that divided by the class entropy (0: unrelated, 1: the argmax names the class).
- ``latent_cosine``: per face, the mean cosine similarity of its M latent vectors over the M(M-1)/2 pairs,
  averaged over faces. 1 when they are copies (ReLU features are non-negative, so unrelated ones sit above 0).
- ``latent_effective_rank``: per face, exp(entropy) of the normalised singular values of its M x P latent matrix
  (Roy & Vetterli, 2007), averaged over faces: 1 for copies, up to M for M orthogonal directions of equal size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..losses import latent_pair_cosine

# A model is flagged as collapsed below/above these (the shipped FER2013 model of 2026: alpha_cv 0.0017).
ALPHA_CV_MIN = 0.02
LATENT_COSINE_MAX = 0.95
LATENT_RANK_MIN = 1.5
# The figures a training run logs per epoch on its validation split (``val_<name>``).
EPOCH_FIGURES = ("alpha_cv", "alpha_class_spread", "argmax_class_nmi", "latent_cosine", "latent_effective_rank")


@torch.no_grad()
def face_alpha_cv(alpha: torch.Tensor) -> torch.Tensor:
    """Per face (B,): the coefficient of variation of its M alpha (population std / mean; 0 for an all-zero face)."""
    a = alpha.detach().float()
    return a.std(1, unbiased=False) / a.mean(1).clamp_min(1e-12)


def batch_alpha_cv(alpha: torch.Tensor) -> torch.Tensor:
    """The summed per-face coefficient of variation of a batch's alpha (B, M): logged on training batches, so a
    run without a validation split still shows when alpha goes flat."""
    return face_alpha_cv(alpha).sum()


@torch.no_grad()
def latent_face_stats(latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per face (B,): the mean pairwise cosine similarity of its M latent vectors and their effective rank.
    Computed batch by batch during prediction, so the (B, M, P) latents need not be kept."""
    lat = torch.nan_to_num(latent.float(), nan=0.0, posinf=0.0, neginf=0.0)  # a diverged model: figures, no crash
    if lat.shape[1] < 2:
        return torch.ones(lat.shape[0]), torch.ones(lat.shape[0])
    cosine = latent_pair_cosine(lat)
    s = torch.linalg.svdvals(lat)  # (B, min(M, P))
    p = s / s.sum(-1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    rank = torch.where(s.sum(-1) > 0, entropy.exp(), torch.zeros_like(entropy))  # an all-zero face: rank 0
    return cosine.cpu(), rank.cpu()


def _mutual_information(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(I(a; b) in bits, I / H(b)) of two integer label arrays."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    mi = float((joint[nz] * np.log2(joint[nz] / (pa @ pb)[nz])).sum())
    hb = float(-(pb[pb > 0] * np.log2(pb[pb > 0])).sum())
    return mi, (mi / hb if hb > 0 else 0.0)


def decomposition_metrics(alpha: np.ndarray, labels: np.ndarray, num_classes: int,
                          latent_cosine: np.ndarray | None = None,
                          latent_rank: np.ndarray | None = None) -> dict[str, Any]:
    """The figures of the module docstring for one evaluation; ``collapsed`` and its ``collapse_reasons``."""
    alpha = np.asarray(alpha, dtype=np.float64)
    labels = np.asarray(labels)
    m = alpha.shape[1]
    out: dict[str, Any] = {"num_latent": m, "alpha_cv": float(face_alpha_cv(torch.from_numpy(alpha)).mean())}
    present = [c for c in range(num_classes) if (labels == c).any()]
    table = np.stack([alpha[labels == c].mean(0) for c in present])  # (K', M)
    shares = table / np.maximum(table.sum(1, keepdims=True), 1e-12)
    out["alpha_class_spread"] = float(shares.std(0).mean() * m) if len(present) > 1 else 0.0
    out["argmax_class_mi"], out["argmax_class_nmi"] = _mutual_information(alpha.argmax(1), labels.astype(int))
    if latent_cosine is not None:
        out["latent_cosine"] = float(np.mean(latent_cosine))
    if latent_rank is not None:
        out["latent_effective_rank"] = float(np.mean(latent_rank))
    reasons = collapse_reasons(out)
    out["collapsed"] = bool(reasons)
    out["collapse_reasons"] = reasons
    return out


def collapse_reasons(m: dict[str, Any]) -> list[str]:
    """Why the figures ``m`` say the model does not decompose (empty: it does)."""
    reasons = []
    if m["num_latent"] > 1 and m["alpha_cv"] < ALPHA_CV_MIN:
        reasons.append(f"alpha is flat: per-face coefficient of variation {m['alpha_cv']:.4f} < {ALPHA_CV_MIN}")
    if m.get("latent_cosine", 0.0) > LATENT_COSINE_MAX:
        reasons.append(f"latent features are near-copies: mean pairwise cosine {m['latent_cosine']:.3f} > "
                       f"{LATENT_COSINE_MAX}")
    if m["num_latent"] > 1 and 0 < m.get("latent_effective_rank", LATENT_RANK_MIN) < LATENT_RANK_MIN:
        reasons.append(f"latent features span one direction: effective rank {m['latent_effective_rank']:.2f} < "
                       f"{LATENT_RANK_MIN}")
    return reasons


def summary_line(m: dict[str, Any]) -> str:
    """One line for logs and the CLI."""
    parts = [f"alpha CV {m['alpha_cv']:.3f}", f"class spread {m['alpha_class_spread']:.3f}",
             f"argmax-class NMI {m['argmax_class_nmi']:.3f}"]
    if "latent_cosine" in m:
        parts.append(f"latent cosine {m['latent_cosine']:.3f}")
    if "latent_effective_rank" in m:
        parts.append(f"latent eff. rank {m['latent_effective_rank']:.2f}/{m['num_latent']}")
    state = "COLLAPSED (" + "; ".join(m["collapse_reasons"]) + ")" if m["collapsed"] else "decomposes"
    return f"decomposition: {', '.join(parts)}: {state}"
