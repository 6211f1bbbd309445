import importlib.util

import pytest
import torch

import fdrl
import parity_reference as reference
from fdrl.models import FDRL, FDRLConfig, ResNet18Trunk


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return fdrl.create_model("fdrl_resnet18", num_classes=7)


def test_registry_lists_both_models():
    assert {"fdrl_resnet18", "baseline_resnet18"} <= set(fdrl.list_models())
    with pytest.raises(KeyError, match="did you mean"):
        fdrl.create_model("fdrl_resnet81")
    with pytest.raises(TypeError, match="num_latent"):
        fdrl.create_model("fdrl_resnet18", num_latnet=3)


def test_parameter_count_matches_spec(model):
    total = sum(p.numel() for p in model.parameters())
    trunk = sum(p.numel() for p in model.backbone.parameters())
    assert trunk == 11_176_512
    assert total == 12_065_607  # spec §1.6
    base = fdrl.create_model("baseline_resnet18", num_classes=7)
    assert sum(p.numel() for p in base.parameters()) == 11_176_512 + 512 * 7 + 7


@pytest.mark.parametrize("size", [32, 48, 100, 112])
def test_shapes_for_input_sizes(model, size):
    model.eval()
    out = model(torch.randn(2, 3, size, size))
    assert out.logits.shape == (2, 7)
    assert out.latent.shape == (2, 9, 128)
    assert out.alpha.shape == (2, 9)
    assert out.feature.shape == (2, 128)
    assert out.basic.shape == (2, 512)
    assert torch.all(out.alpha > 0) and torch.all(out.alpha < 128)


def test_baseline_fills_what_it_has():
    base = fdrl.create_model("baseline_resnet18", num_classes=6).eval()
    out = base(torch.randn(2, 3, 48, 48))
    assert out.logits.shape == (2, 6) and out.feature.shape == (2, 512)
    assert out.latent is None and out.alpha is None


def _reference_head(model: FDRL, x: torch.Tensor) -> torch.Tensor:
    """The spec's pseudo-code (§8) written with explicit per-branch loops."""
    c = model.config
    ls, fs, gs, alphas = [], [], [], []
    for j in range(c.num_latent):
        lj = torch.relu(x @ model.fdn.weight[j].T + model.fdn.bias[j])
        uj = torch.sigmoid(lj @ model.intra.weight[j].T + model.intra.bias[j])
        aj = uj.abs().sum(-1)
        fj = aj[:, None] * lj
        gj = torch.relu(fj @ model.message.weight[j].T + model.message.bias[j])
        ls.append(lj), fs.append(fj), gs.append(gj), alphas.append(aj)
    g = torch.stack(gs, 1)
    f = torch.stack(fs, 1)
    w = torch.zeros(x.shape[0], c.num_latent, c.num_latent)
    for j in range(c.num_latent):
        for m in range(c.num_latent):
            if j != m:
                w[:, j, m] = torch.tanh(torch.linalg.vector_norm(g[:, j] - g[:, m], dim=-1))
    h = w @ g
    z = c.delta * f + (1 - c.delta) * h
    return model.classifier(z.sum(1))


def test_head_matches_loop_reference(model):
    x = torch.randn(4, 512)
    out = model.forward_head(x)
    torch.testing.assert_close(out.logits, _reference_head(model, x), rtol=1e-4, atol=1e-5)


def test_relation_matrix_zero_diagonal_and_row_norm():
    m = FDRL(FDRLConfig(inter_w_norm="row_sum"))
    g = torch.rand(3, 9, 128)
    w = m.relation_matrix(g)
    assert torch.all(torch.diagonal(w, dim1=1, dim2=2) == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 9), atol=1e-4, rtol=0)


def test_identical_messages_give_finite_gradient():
    m = FDRL(FDRLConfig())
    g = torch.zeros(2, 9, 128, requires_grad=True)
    m.relation_matrix(g).sum().backward()
    assert torch.isfinite(g.grad).all()


def test_switches_change_structure():
    shared = FDRL(FDRLConfig(share_relation_weights=True, linear_bias=False, num_latent=5, latent_dim=64))
    assert shared.intra.weight.shape == (1, 128, 64) and shared.fdn.weight.shape == (5, 64, 512)
    assert shared.fdn.bias is None
    out = shared(torch.randn(2, 3, 48, 48))
    assert out.latent.shape == (2, 5, 64)
    with pytest.raises(ValueError, match="delta"):
        FDRLConfig(delta=1.5)


def test_a_second_trunk_plugs_in_by_name(monkeypatch):
    from torch import nn

    from fdrl.models import TRUNKS
    from fdrl.optim import OptimConfig, param_groups

    class Tiny(nn.Module):
        num_features = 16

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    monkeypatch.setitem(TRUNKS, "tiny", Tiny)
    for name in ("fdrl_resnet18", "baseline_resnet18"):
        m = fdrl.create_model(name, num_classes=5, trunk="tiny")
        assert m(torch.randn(2, 3, 32, 32)).logits.shape == (2, 5)
        groups = {g["name"]: g["params"] for g in param_groups(m, None, OptimConfig())}
        assert {id(p) for p in groups["backbone_decay"] + groups["backbone_no_decay"]} == {
            id(p) for p in m.backbone.parameters()}
    assert fdrl.create_model("fdrl_resnet18", trunk="tiny").fdn.weight.shape[-1] == 16
    with pytest.raises(ValueError, match="'tiny' takes no option stem='small'"):
        fdrl.create_model("fdrl_resnet18", trunk="tiny", stem="small")
    with pytest.raises(KeyError, match="unknown trunk 'resnet50'.*available: .*tiny"):
        fdrl.create_model("fdrl_resnet18", trunk="resnet50")


def test_fdn_branches_are_distinct(model):
    out = model.forward_head(torch.randn(3, 512))
    assert not torch.allclose(out.latent[:, 0], out.latent[:, 1])


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision not installed")
def test_trunk_matches_torchvision_numerics():
    import torchvision

    ref = torchvision.models.resnet18(weights=None).eval()
    ours = ResNet18Trunk().eval()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state, strict=True)
    ref.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_trunk_matches_stored_torchvision_outputs():
    """Without torchvision installed: its ResNet-18's names, shapes and output, stored by tests/parity_reference.py
    for seeded weights and input (conv numerics may differ across torch builds in the last bits, hence 1e-4)."""
    stored = reference.load(reference.TORCHVISION_FILE)
    ours = ResNet18Trunk().eval()
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert sorted(shapes) == stored["keys"].tolist()
    ours.load_state_dict(reference.seeded_state(shapes), strict=True)
    with torch.no_grad():
        out = ours(reference.trunk_input())
    torch.testing.assert_close(out, torch.from_numpy(stored["output"]), rtol=1e-4, atol=1e-4)
