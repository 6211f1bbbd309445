"""Batch mixing for training: mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) on normalised tensors.

Both turn the targets into soft distributions (B, K), which the criterion already takes (FERPlus votes); the
auxiliary FDRL losses and the centre updates then use the dominant label (argmax), as for vote distributions.
Draws come from the caller's generator, so an epoch's mixing is a pure function of (seed, epoch, rank) and
``--resume`` stays exact.
"""

from __future__ import annotations

import math
import typing

import torch
import torch.nn.functional as F

from ..literals import MixMode

MIX_MODES: tuple[str, ...] = typing.get_args(MixMode)


def mix_batch(x: torch.Tensor, target: torch.Tensor, num_classes: int, mode: str, alpha: float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each sample with a shuffled partner; returns (images, soft targets). ``mode="none"`` is a no-op."""
    if mode == "none":
        return x, target
    if mode not in MIX_MODES:
        raise ValueError(f"mix must be one of {MIX_MODES}, got {mode!r}")
    if alpha <= 0:
        raise ValueError(f"mix_alpha must be > 0, got {alpha}")
    soft = target.float() if target.dim() == 2 else F.one_hot(target, num_classes).float()
    b = x.shape[0]
    perm = torch.randperm(b, generator=generator).to(x.device)
    # Beta(alpha, alpha) as a ratio of two gammas drawn with our generator (torch.distributions takes none)
    g = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    lam = float(g[0] / g.sum().clamp_min(1e-12))
    if mode == "mixup":
        out = lam * x + (1.0 - lam) * x[perm]
    else:
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy = int(torch.randint(h, (1,), generator=generator))
        cx = int(torch.randint(w, (1,), generator=generator))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        out = x.clone()
        out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the pasted area decides the label weight
    return out, lam * soft + (1.0 - lam) * soft[perm.to(soft.device)]
