import pytest
import torch

import fdrl
from fdrl.losses import FDRLCriterion, LossConfig
from fdrl.models import ModelOutput


def _out(latent, alpha, logits):
    return ModelOutput(logits=logits, feature=latent.sum(1), basic=latent.sum(1), latent=latent, alpha=alpha)


def test_each_part_against_hand_computed_values():
    crit = FDRLCriterion(num_classes=2, num_latent=2, latent_dim=2).eval()
    crit.feature_centres.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    crit.alpha_centres.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    latent = torch.tensor([[[1.0, 1.0], [0.0, 3.0]], [[3.0, 0.0], [1.0, 1.0]]])
    alpha = torch.tensor([[1.0, 1.0], [2.0, 6.0]])
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    parts = crit(_out(latent, alpha, logits), y)
    # compactness: sample0: |(0,1)|^2 + |(0,2)|^2 = 1 + 4 = 5; sample1: |(2,0)|^2 + |(1,0)|^2 = 5 -> mean 5
    assert parts["compactness"].item() == pytest.approx(5.0)
    # balance: mean alpha = (1.5, 3.5); |1.5-0.5| + |3.5-0.5| = 4
    assert parts["balance"].item() == pytest.approx(4.0)
    # distribution: sample0 vs (1,2): 0 + 1 = 1; sample1 vs (3,4): 1 + 4 = 5 -> mean 3
    assert parts["distribution"].item() == pytest.approx(3.0)
    ce = (torch.log1p(torch.exp(torch.tensor(-2.0))) + torch.log(torch.tensor(2.0))) / 2
    assert parts["cls"].item() == pytest.approx(ce.item(), rel=1e-6)
    expected = ce.item() + 1e-4 * 5 + 1.0 * 4 + 1e-4 * 3
    assert parts["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_balance_not_scaled_by_batch_size():
    crit = FDRLCriterion(3, 4, 8)
    alpha = torch.rand(1, 4) * 5
    small = crit.balance(alpha)
    big = crit.balance(alpha.repeat(64, 1))
    torch.testing.assert_close(small, big)


def test_normalized_balance_is_scale_free():
    crit = FDRLCriterion(3, 4, 8, LossConfig(balance_target="normalized"))
    alpha = torch.rand(5, 4) + 0.1
    torch.testing.assert_close(crit.balance(alpha), crit.balance(alpha * 37.0))
    assert crit.balance(torch.ones(2, 4)).item() == pytest.approx(0.0, abs=1e-7)


def test_wen_centres_move_toward_batch_means():
    torch.manual_seed(0)
    crit = FDRLCriterion(num_classes=3, num_latent=4, latent_dim=8).train()
    latent = torch.randn(16, 4, 8) + 3.0
    alpha = torch.rand(16, 4) * 10
    y = torch.tensor([0, 1] * 8)  # class 2 absent
    before_c, before_v = crit.feature_centres.clone(), crit.alpha_centres.clone()
    crit(_out(latent, alpha, torch.randn(16, 3)), y)
    mean = latent.mean(0)
    assert (crit.feature_centres - mean).norm() < (before_c - mean).norm()
    # exact Wen rule: c <- c - 0.5 * sum(c - x) / (1 + n)
    expected = before_c - 0.5 * (16 * before_c - latent.sum(0)) / 17
    torch.testing.assert_close(crit.feature_centres, expected)
    v0 = alpha[y == 0].mean(0)
    assert (crit.alpha_centres[0] - v0).norm() < (before_v[0] - v0).norm()
    torch.testing.assert_close(crit.alpha_centres[2], before_v[2])  # absent class untouched


def test_centres_not_updated_in_eval_or_by_gradient():
    crit = FDRLCriterion(3, 4, 8).eval()
    latent = torch.randn(4, 4, 8, requires_grad=True)
    alpha = torch.rand(4, 4, requires_grad=True)
    parts = crit(_out(latent, alpha, torch.randn(4, 3, requires_grad=True)), torch.tensor([0, 1, 2, 0]))
    parts["loss"].backward()
    assert torch.all(crit.feature_centres == 0) and not crit.feature_centres.requires_grad
    assert latent.grad is not None and alpha.grad is not None


def test_first_batch_init_seeds_centres():
    crit = FDRLCriterion(2, 3, 4, LossConfig(centre_init="first_batch")).train()
    latent, alpha = torch.randn(6, 3, 4), torch.rand(6, 3)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    crit(_out(latent, alpha, torch.randn(6, 2)), y)
    torch.testing.assert_close(crit.feature_centres, latent.mean(0))
    torch.testing.assert_close(crit.alpha_centres[1], alpha[3:].mean(0))


def test_learned_centres_get_gradients_and_are_saved():
    crit = FDRLCriterion(3, 4, 8, LossConfig(centre_update="learned"))
    assert {n for n, _ in crit.named_parameters()} == {"feature_centres", "alpha_centres"}
    parts = crit(_out(torch.randn(4, 4, 8), torch.rand(4, 4), torch.randn(4, 3)), torch.tensor([0, 1, 2, 0]))
    parts["loss"].backward()
    assert crit.feature_centres.grad.abs().sum() > 0 and crit.alpha_centres.grad.abs().sum() > 0
    assert "feature_centres" in crit.state_dict()



def test_learned_centres_refuse_wen_only_settings():
    from fdrl.config import ConfigError, load_config

    with pytest.raises(ValueError, match=r"ignores centre_rate=0\.2, centre_init='first_batch'"):
        LossConfig(centre_update="learned", centre_rate=0.2, centre_init="first_batch")
    with pytest.raises(ConfigError, match=r"loss: centre_update='learned' ignores centre_init='first_batch'"):
        load_config(None, ["loss.centre_update=learned", "loss.centre_init=first_batch"])
    assert LossConfig(centre_update="learned", centre_rate=0.5).centre_init == "zeros"  # the defaults: accepted
    assert LossConfig(centre_rate=0.2, centre_init="first_batch").centre_update == "wen"

def test_soft_targets_and_baseline_output():
    crit = FDRLCriterion(3, 4, 8)
    base = ModelOutput(logits=torch.randn(2, 3), feature=torch.randn(2, 512), basic=torch.randn(2, 512))
    parts = crit(base, torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    assert parts["compactness"].item() == 0 and parts["loss"].item() == parts["cls"].item()


def test_full_model_every_parameter_gets_finite_gradient():
    torch.manual_seed(0)
    model = fdrl.create_model("fdrl_resnet18", num_classes=5, num_latent=3)
    crit = fdrl.create_criterion(model).train()
    parts = crit(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    parts["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert crit.feature_centres.abs().sum() > 0  # moved by the centre rule instead


def test_few_steps_on_fixed_batch_reduce_loss():
    torch.manual_seed(0)
    model = fdrl.create_model("fdrl_resnet18", num_classes=3)
    crit = fdrl.create_criterion(model).train()
    opt = fdrl.build_optimizer(model, crit, fdrl.OptimConfig(lr=1e-3))
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    losses, cls = [], []
    for _ in range(25):
        parts = crit(model(x), y)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append(parts["loss"].item())
        cls.append(parts["cls"].item())
    assert losses[-1] < 0.5 * losses[0]
    assert cls[-1] < 0.5 * cls[0]
