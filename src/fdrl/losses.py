"""FDRL's training objective: one module owning every part and its centres.

total = cls + lambda_c * compactness + lambda_b * balance + lambda_d * distribution   (spec §2)
        [+ lambda_div * diversity + lambda_sharp * sharpness]   (not in the paper; 0 by default)

The two additions keep the decomposition from collapsing (docs/results.md, "Does FDRL decompose?"):
- ``diversity``: per face, the mean cosine similarity between its M latent vectors (they are summed into one
  expression feature, so they share a space): 0 when every latent feature uses other coordinates, 1 for copies.
- ``sharpness``: per face, the entropy of its weight shares alpha_j / sum(alpha), divided by log M: 1 when a face
  weighs every latent feature alike. Lowering it while the balance loss evens out the *batch* mean is the
  mixture-of-experts recipe: each face leans on a few latent features, all of them get used.

Centres (spec §5.4):
- ``centre_update="wen"`` (default): buffers moved by the centre-loss rule of Wen et al. (2016),
  c <- c - rate * sum_i (c - x_i) / (1 + n), under ``no_grad``, once per training forward. In DDP the sums and
  counts are all-reduced first so every rank applies the same update and the centres stay identical.
- ``centre_update="learned"``: ``nn.Parameter`` centres trained by the optimiser (CDNet style).
Either way they live in ``state_dict()`` and are saved in checkpoints (the bug of centres that never move and
are never saved is what this module exists to avoid).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .literals import check_literal_fields
from .models.fdrl import ModelOutput


@dataclass
class LossConfig:
    lambda_compactness: float = 1e-4  # lambda_1
    lambda_balance: float = 1.0  # lambda_2
    lambda_distribution: float = 1e-4  # lambda_3
    balance_target: Literal["literal", "normalized"] = "literal"  # spec §5.3
    centre_update: Literal["wen", "learned"] = "wen"  # spec §5.4
    centre_rate: float = 0.5  # Wen update rate
    centre_init: Literal["zeros", "first_batch"] = "zeros"
    learned_centre_l2norm: bool = False  # L2-normalise learned compactness centres (CDNet)
    # "centre" (the paper): pull each weight vector to its class centre. "contrastive": the same pull divided by
    # the mean squared distance to the other classes' centres (contrastive-centre loss, Qi & Su 2017), so the
    # class profiles of alpha are also pushed apart; scale-free, so it acts on alpha of any overall size.
    distribution_form: Literal["centre", "contrastive"] = "centre"
    lambda_diversity: float = 0.0  # latent features of a face pointing the same way (see module docstring)
    lambda_sharpness: float = 0.0  # a face weighing all latent features alike
    label_smoothing: float = 0.0
    # Logit adjustment (Menon et al., ICLR 2021): training logits + tau * log(class prior), so the plain logits
    # used at inference are balanced across classes (FER2013's disgust is 1.5 % of Training). 0 = off.
    logit_adjust: float = 0.0
    # Distillation (data.teacher_targets): the teachers' share w of each training target, w x teachers' probabilities
    # + (1 - w) x the label's target (one-hot, or the votes where the data set gives them).
    distill_weight: float = 0.5

    def __post_init__(self) -> None:
        check_literal_fields(self)
        if not 0.0 < self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must lie in (0, 1] (the teachers' share of each training target), "
                             f"got {self.distill_weight}")
        if not 0.0 < self.centre_rate <= 1.0:
            raise ValueError(f"centre_rate must lie in (0, 1], got {self.centre_rate}")
        if self.centre_update == "learned":  # the optimiser moves learned centres: these would be ignored
            defaults = {f.name: f.default for f in fields(self) if f.name in ("centre_rate", "centre_init")}
            changed = ", ".join(f"{k}={getattr(self, k)!r}" for k, v in defaults.items() if getattr(self, k) != v)
            if changed:
                raise ValueError(f"centre_update='learned' ignores {changed}: they set Wen's rule "
                                 f"(centre_update='wen'), while learned centres are trained by the optimiser "
                                 f"from a small random start. Drop them or use centre_update='wen'.")


def latent_pair_cosine(latent: torch.Tensor) -> torch.Tensor:
    """Per face (B,): the mean cosine similarity of its M latent vectors (B, M, P) over the pairs j != m; zeros for
    M = 1. The diversity loss and the decomposition figures (fdrl.engine.decomposition) share this definition."""
    m = latent.shape[1]
    if m < 2:
        return latent.new_zeros(latent.shape[0])
    unit = F.normalize(latent, dim=-1)
    gram = unit @ unit.transpose(1, 2)  # (B, M, M)
    return (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)) / (m * (m - 1))


def _all_reduce_sum(*tensors: torch.Tensor) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


class FDRLCriterion(nn.Module):
    """Cross-entropy plus FDRL's compactness, balance and distribution losses.

    Works for the baseline too: when the model output has no latent features the auxiliary parts are zero.
    ``target`` is class indices (B,) or a soft target distribution (B, K) (FERPlus vote distributions).
    """

    def __init__(self, num_classes: int, num_latent: int, latent_dim: int, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()
        self.num_classes, self.num_latent, self.latent_dim = num_classes, num_latent, latent_dim
        feat_centres = torch.zeros(num_latent, latent_dim)  # c_j, shared by all classes
        alpha_centres = torch.zeros(num_classes, num_latent)  # v_k, one per class
        if self.config.centre_update == "learned":
            self.feature_centres = nn.Parameter(torch.randn(num_latent, latent_dim) * 0.01)
            self.alpha_centres = nn.Parameter(torch.randn(num_classes, num_latent) * 0.01)
        else:
            self.register_buffer("feature_centres", feat_centres)
            self.register_buffer("alpha_centres", alpha_centres)
        # Which centres have been seeded (centre_init="first_batch"); persistent so resume is exact.
        self.register_buffer("feature_seeded", torch.zeros((), dtype=torch.bool))
        self.register_buffer("alpha_seeded", torch.zeros(num_classes, dtype=torch.bool))
        # log class prior of the training set for logit adjustment; set by the trainer, recomputed on resume
        self.register_buffer("log_prior", torch.zeros(num_classes), persistent=False)

    def set_class_prior(self, counts: torch.Tensor) -> None:
        """Class frequencies of the training set (counts or soft-target sums), for ``logit_adjust``."""
        prior = counts.float().clamp_min(1.0)
        self.log_prior.copy_((prior / prior.sum()).log().to(self.log_prior.device))

    # ---- parts -------------------------------------------------------------------------------------------
    def compactness(self, latent: torch.Tensor) -> torch.Tensor:
        """mean_b sum_j ||l_bj - c_j||^2."""
        centres = self.feature_centres
        if self.config.centre_update == "learned" and self.config.learned_centre_l2norm:
            centres = F.normalize(centres, dim=-1)
        return (latent - centres.to(latent.dtype)).pow(2).sum(dim=(1, 2)).mean()

    def balance(self, alpha: torch.Tensor) -> torch.Tensor:
        """|| mean_b alpha_b - 1/M ||_1: one L1 norm over the M-vector, not scaled by the batch size."""
        mean_alpha = alpha.mean(0)  # (M,)
        if self.config.balance_target == "normalized":
            mean_alpha = mean_alpha / mean_alpha.sum().clamp_min(1e-12)
        return (mean_alpha - 1.0 / self.num_latent).abs().sum()

    def distribution(self, alpha: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """mean_b ||alpha_b - v_{y_b}||^2; "contrastive": each term over mean_{k != y_b} ||alpha_b - v_k||^2."""
        centres = self.alpha_centres.to(alpha.dtype)
        if self.config.distribution_form == "centre":
            return (alpha - centres[labels]).pow(2).sum(-1).mean()
        d2 = (alpha.unsqueeze(1) - centres.unsqueeze(0)).pow(2).sum(-1)  # (B, K)
        own = d2.gather(1, labels[:, None]).squeeze(1)
        others = (d2.sum(1) - own) / max(1, self.num_classes - 1)
        return (own / (others + 1e-8)).mean()

    @staticmethod
    def diversity(latent: torch.Tensor) -> torch.Tensor:
        """mean_b mean_{j != m} cos(l_bj, l_bm)."""
        return latent_pair_cosine(latent).mean()

    @staticmethod
    def sharpness(alpha: torch.Tensor) -> torch.Tensor:
        """mean_b H(alpha_b / sum_j alpha_bj) / log M."""
        m = alpha.shape[1]
        if m < 2:
            return alpha.new_zeros(())
        p = alpha / alpha.sum(1, keepdim=True).clamp_min(1e-12)
        return -(p * p.clamp_min(1e-12).log()).sum(1).mean() / torch.log(torch.tensor(float(m)))

    def classification(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.training and self.config.logit_adjust:
            logits = logits.float() + self.config.logit_adjust * self.log_prior
        if target.dim() == 2:  # soft targets
            return F.cross_entropy(logits.float(), target.float(), label_smoothing=self.config.label_smoothing)
        return F.cross_entropy(logits.float(), target, label_smoothing=self.config.label_smoothing)

    # ---- centre rule -------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_centres(self, latent: torch.Tensor, alpha: torch.Tensor, labels: torch.Tensor) -> None:
        """Wen et al.'s update, identical on every DDP rank (sums and counts are all-reduced)."""
        rate = self.config.centre_rate
        latent, alpha = latent.detach().float(), alpha.detach().float()
        n = torch.tensor(float(latent.shape[0]), device=latent.device)
        lat_sum = latent.sum(0)  # (M, P)
        cls_count = torch.zeros(self.num_classes, device=alpha.device).index_add_(
            0, labels, torch.ones_like(labels, dtype=torch.float)
        )
        alpha_sum = torch.zeros(self.num_classes, self.num_latent, device=alpha.device).index_add_(0, labels, alpha)
        _all_reduce_sum(n, lat_sum, cls_count, alpha_sum)

        c = self.feature_centres
        if self.config.centre_init == "first_batch" and not bool(self.feature_seeded):
            c.copy_(lat_sum / n.clamp_min(1))
            self.feature_seeded.fill_(True)
        else:
            # sum_i (c - x_i) / (1 + n) = (n c - sum x) / (1 + n)
            c.sub_(rate * (n * c - lat_sum) / (1.0 + n))

        v = self.alpha_centres
        present = cls_count > 0
        delta = (cls_count[:, None] * v - alpha_sum) / (1.0 + cls_count[:, None])
        if self.config.centre_init == "first_batch":
            seed = present & ~self.alpha_seeded
            v[seed] = alpha_sum[seed] / cls_count[seed, None]
            self.alpha_seeded |= present
            delta[seed] = 0.0
        v.sub_(rate * delta * present[:, None])

    # ---- total -------------------------------------------------------------------------------------------
    def forward(self, output: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        cls = self.classification(output.logits, target)
        zero = cls.new_zeros(())
        if output.latent is None or output.alpha is None:
            parts = {"loss": cls, "cls": cls, "compactness": zero, "balance": zero, "distribution": zero}
            return parts | {k: zero for k in self._extra_parts()}
        labels = target.argmax(-1) if target.dim() == 2 else target
        latent, alpha = output.latent.float(), output.alpha.float()
        comp = self.compactness(latent)
        bal = self.balance(alpha)
        distr = self.distribution(alpha, labels)
        total = cls + cfg.lambda_compactness * comp + cfg.lambda_balance * bal + cfg.lambda_distribution * distr
        extra = {}
        if "diversity" in self._extra_parts():
            extra["diversity"] = self.diversity(latent)
            total = total + cfg.lambda_diversity * extra["diversity"]
        if "sharpness" in self._extra_parts():
            extra["sharpness"] = self.sharpness(alpha)
            total = total + cfg.lambda_sharpness * extra["sharpness"]
        if self.training and cfg.centre_update == "wen":
            self.update_centres(latent, alpha, labels)  # after the losses: they use the pre-update centres
        return {"loss": total, "cls": cls, "compactness": comp, "balance": bal, "distribution": distr} | extra

    def _extra_parts(self) -> tuple[str, ...]:
        """The optional parts this criterion computes (and returns, so logs show them), in a fixed order."""
        cfg = self.config
        return tuple(n for n, w in (("diversity", cfg.lambda_diversity), ("sharpness", cfg.lambda_sharpness)) if w)


def create_criterion(model: nn.Module, config: LossConfig | None = None) -> FDRLCriterion:
    """A criterion sized for ``model`` (the baseline gets centres it never uses, for one checkpoint format)."""
    mc = model.config
    return FDRLCriterion(
        num_classes=mc.num_classes,
        num_latent=getattr(mc, "num_latent", 1),
        latent_dim=getattr(mc, "latent_dim", 1),
        config=config,
    )
