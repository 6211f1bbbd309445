"""Decomposition figures, the collapse flag, the switches that keep FDRL decomposing, and SFEW's folds."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fdrl
from conftest import CLASSES
from fdrl.checkpoint import atomic_save, make_checkpoint
from fdrl.config import Preprocessing
from fdrl.data.datasets import sfew_movie
from fdrl.data.registry import create_dataset, is_test_split
from fdrl.data.splits import stratified_group_folds
from fdrl.engine.decomposition import batch_alpha_cv, decomposition_metrics, latent_face_stats
from fdrl.errors import DataError
from fdrl.losses import FDRLCriterion, LossConfig

ROOT = Path(__file__).resolve().parents[1]


def test_alpha_figures_by_hand():
    alpha = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [4.0, 0.0]])  # per-face CV: 0.5, 0, 0.5, 1
    labels = np.array([0, 0, 1, 1])
    m = decomposition_metrics(alpha, labels, num_classes=2)
    assert m["alpha_cv"] == pytest.approx(0.5)
    # class means (1.5, 2.5) and (3.5, 0.5) -> shares (0.375, 0.625), (0.875, 0.125); std across classes 0.25
    # for both latent features, times M=2
    assert m["alpha_class_spread"] == pytest.approx(0.5)
    # argmax: faces 0,1 -> feature 1 and 0 (tie: first), faces 2,3 -> feature 0: I(argmax; class) by hand
    pa, joint = {0: 0.75, 1: 0.25}, {(1, 0): 0.25, (0, 0): 0.25, (0, 1): 0.5}
    mi = sum(p * math.log2(p / (pa[a] * 0.5)) for (a, _), p in joint.items())
    assert m["argmax_class_mi"] == pytest.approx(mi) and m["argmax_class_nmi"] == pytest.approx(mi / 1.0)
    assert not m["collapsed"]
    assert float(batch_alpha_cv(torch.tensor(alpha))) == pytest.approx(2.0)  # summed over the 4 faces


def test_latent_figures_by_hand():
    copies = torch.tensor([[[1.0, 2.0, 0.0]] * 3])  # three copies: cosine 1, effective rank 1
    orth = torch.eye(3).unsqueeze(0)  # three orthonormal vectors: cosine 0, effective rank 3
    cos, rank = latent_face_stats(torch.cat([copies, orth]))
    assert cos.tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    assert rank.tolist() == pytest.approx([1.0, 3.0], abs=1e-4)


def _collapsed_model() -> torch.nn.Module:
    """FDRL forced to collapse: every FDN branch has the same weights (latent copies) and Intra-RM ignores its
    input (the same alpha for every latent feature)."""
    torch.manual_seed(0)
    model = fdrl.create_model("fdrl_resnet18", num_classes=7, num_latent=4, alpha_reduce="mean").eval()
    with torch.no_grad():
        model.fdn.weight.copy_(model.fdn.weight[:1].expand_as(model.fdn.weight))
        model.fdn.bias.copy_(model.fdn.bias[:1].expand_as(model.fdn.bias))
        model.intra.weight.zero_()
        model.intra.bias.zero_()
    return model


@pytest.mark.parametrize("collapse", [True, False])
def test_report_flags_a_collapsed_model(tmp_path, collapse, capsys):
    from fdrl.cli import main

    if collapse:
        model = _collapsed_model()
    else:
        torch.manual_seed(0)
        model = fdrl.create_model("fdrl_resnet18", num_classes=7, num_latent=4, alpha_reduce="mean",
                                  intra_out_dim=1, alpha_norm="softmax", alpha_temperature=0.01).eval()
    path = tmp_path / "m.pt"
    atomic_save(make_checkpoint(model, CLASSES, Preprocessing(input_size=32)), path)
    code = main(["eval", "--checkpoint", str(path), "--dataset", "synthetic", "--split", "test", "--out",
                 str(tmp_path / "ev"), "--option", "eval_size=28", "--option", "image_size=32"])
    printed = capsys.readouterr().out
    dec = json.loads((tmp_path / "ev" / "metrics.json").read_text())["decomposition"]
    assert code == 0 and dec["collapsed"] is collapse and ("COLLAPSED" in printed) is collapse
    assert (tmp_path / "ev" / "decomposition.txt").read_text().startswith("decomposition:")
    if collapse:
        assert dec["alpha_cv"] < 1e-6 and dec["latent_cosine"] == pytest.approx(1.0, abs=1e-4)
        assert len(dec["collapse_reasons"]) == 3
    else:  # a competitive gate at a low temperature: the weights of a face differ
        assert dec["alpha_cv"] > 0.1 and dec["collapse_reasons"] == []


def test_softmax_alpha_is_a_budget_per_face():
    torch.manual_seed(0)
    model = fdrl.create_model("fdrl_resnet18", num_classes=7, num_latent=5, stem="small", intra_out_dim=1,
                              alpha_norm="softmax", alpha_temperature=0.1).eval()
    out = model(torch.randn(3, 3, 32, 32))
    assert out.alpha.sum(1).tolist() == pytest.approx([5.0] * 3, rel=1e-5) and (out.alpha > 0).all()
    with pytest.raises(ValueError, match="alpha_temperature"):
        fdrl.create_model("fdrl_resnet18", alpha_temperature=0.0)


def test_added_loss_parts_by_hand():
    crit = FDRLCriterion(3, 2, 2, LossConfig(lambda_diversity=1.0, lambda_sharpness=1.0))
    latent = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # cos 45 degrees
    assert float(crit.diversity(latent)) == pytest.approx(1 / math.sqrt(2))
    alpha = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # entropies log 2 and 0, over log 2
    assert float(crit.sharpness(alpha)) == pytest.approx(0.5)
    out = fdrl.ModelOutput(logits=torch.zeros(2, 3), feature=torch.zeros(2, 2), basic=torch.zeros(2, 4),
                           latent=torch.cat([latent, latent]), alpha=alpha)
    parts = crit.train()(out, torch.tensor([0, 1]))
    assert {"diversity", "sharpness"} <= set(parts)
    assert float(parts["loss"]) == pytest.approx(float(parts["cls"] + 1e-4 * parts["compactness"] + parts["balance"]
                                                       + 1e-4 * parts["distribution"] + parts["diversity"]
                                                       + parts["sharpness"]), rel=1e-6)
    plain = FDRLCriterion(3, 2, 2, LossConfig())(out, torch.tensor([0, 1]))
    assert "diversity" not in plain and "sharpness" not in plain  # off by default: the paper's objective


def test_contrastive_distribution_pushes_class_profiles_apart():
    crit = FDRLCriterion(2, 2, 2, LossConfig(distribution_form="contrastive"))
    crit.alpha_centres.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    alpha = torch.tensor([[1.0, 0.0], [0.5, 0.5]], requires_grad=True)
    d = crit.distribution(alpha, torch.tensor([0, 0]))
    assert float(d.detach()) == pytest.approx((0.0 / 2.0 + 0.5 / 0.5) / 2)  # own / other centre's squared distance
    d.backward()
    assert alpha.grad[1, 0] < 0 < alpha.grad[1, 1]  # descent moves face 1 toward class 0's profile


def test_group_folds_keep_groups_whole_and_classes_balanced():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300).tolist()
    groups = [f"g{i // 6}" for i in range(300)]  # 50 groups of 6
    folds = stratified_group_folds(labels, groups, 5, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(300))
    for f in folds:
        assert {groups[i] for i in f}.isdisjoint({groups[i] for g in folds if g is not f for i in g})
        counts = np.bincount([labels[i] for i in f], minlength=3)
        assert np.abs(counts - np.bincount(labels) / 5).max() <= 6  # at most one group off per class
    assert folds != stratified_group_folds(labels, groups, 5, seed=2)  # the seed picks the cut
    with pytest.raises(ValueError, match="at least 5 groups"):
        stratified_group_folds([0, 1, 0], ["a", "a", "b"], 5)


def test_derived_folds_of_a_flat_data_set():
    opts = {"train_size": 70, "eval_size": 7, "image_size": 16}
    test = create_dataset("synthetic", None, "train/fold1/test", num_folds=5, **opts)
    rest = create_dataset("synthetic", None, "train/fold1/train", num_folds=5, **opts)
    ids = ({s.id for s in test.samples}, {s.id for s in rest.samples})
    assert not ids[0] & ids[1] and len(test) + len(rest) == 70 and 10 <= len(test) <= 18
    assert not is_test_split("sfew", "train/fold1/test")  # carved from train: a validation figure
    with pytest.raises(DataError, match="fold 5"):
        create_dataset("synthetic", None, "train/fold5/test", num_folds=5, **opts)


def test_sfew_movie_from_file_names():
    assert sfew_movie("Airheads_000519240_00000005.png") == "Airheads"
    assert sfew_movie("OceansThirteen-010619400_00000087.png") == "OceansThirteen"
    assert sfew_movie("IAmSam_013827920__00000055.png") == "IAmSam"


@pytest.mark.slow
def test_cross_validate_script_pairs_arms(tmp_path):
    common = ("data.dataset=synthetic,data.options.train_size=80,data.options.image_size=32,"
              "data.preprocessing.input_size=32,data.cache=false,train.epochs=1,train.batch_size=16,"
              "model.num_latent=3,trunk.stem=small")
    cmd = [sys.executable, str(ROOT / "scripts" / "cross_validate.py"), "--root", "unused", "--out", str(tmp_path),
           "--folds", "2", "--seeds", "0", "--arm", f"baseline=fer2013:{common},model_name=baseline_resnet18",
           "--arm", f"fdrl=fer2013:{common}"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["cells"] == 2 and set(s["arms"]) == {"baseline", "fdrl"}
    accs = {arm: [json.loads((tmp_path / arm / f"s0_f{k}" / "summary.json").read_text())["test_accuracy"]
                  for k in range(2)] for arm in ("baseline", "fdrl")}
    diff = [100 * (a - b) for a, b in zip(accs["fdrl"], accs["baseline"], strict=True)]
    assert s["arms"]["fdrl"]["accuracy_minus_baseline"][0] == pytest.approx(np.mean(diff))
    assert "alpha_cv" in s["arms"]["fdrl"] and "alpha_cv" not in s["arms"]["baseline"]
    assert "− baseline" in res.stdout


def test_latent_figures_of_a_diverged_model_do_not_crash():
    cos, rank = latent_face_stats(torch.full((2, 3, 4), float("nan")))
    assert rank.tolist() == [0.0, 0.0] and torch.isfinite(cos).all()
