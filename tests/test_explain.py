"""Per-latent-feature saliency maps (``fdrl explain``): shapes, averages, a model whose latent features each see
one known image region, the CLI's files, and the baseline's refusal."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fdrl
from fdrl.checkpoint import atomic_save, make_checkpoint
from fdrl.config import Preprocessing, load_config
from fdrl.data.preprocess import BatchTransform
from fdrl.data.registry import create_dataset
from fdrl.data.synthetic import CLASSES
from fdrl.data.tensors import TensorSet, decode_dataset
from fdrl.engine.evaluate import predict
from fdrl.engine.explain import (
    METHODS,
    TARGETS,
    LatentMaps,
    latent_saliency,
    map_similarity,
    pick_per_class,
    plot_latent_grid,
)
from fdrl.engine.report import alpha_by_class
from fdrl.errors import ConfigError

S = 32
CPU = torch.device("cpu")
PREP = Preprocessing(input_size=S)
TRANSFORM = BatchTransform(PREP.mean, PREP.std)


@pytest.fixture(scope="module")
def data():
    return decode_dataset(create_dataset("synthetic", None, "val", num_samples=28, image_size=S), S, False)


def _tiny_fdrl(seed: int = 0):
    torch.manual_seed(seed)
    return fdrl.create_model("fdrl_resnet18", num_latent=3, latent_dim=16, intra_out_dim=8, stem="small").eval()


def test_shapes_averages_and_batch_independence(data):
    model = _tiny_fdrl()
    maps = latent_saliency(model, data, TRANSFORM, CPU, max_per_class=3, batch_size=64)
    assert maps.saliency.shape == (3, 7, S, S) and maps.mean_faces.shape == (7, S, S)
    assert maps.mean_alpha.shape == (7, 3) and maps.magnitude.shape == (3, 7) and maps.counts.tolist() == [3] * 7
    assert np.isfinite(maps.saliency).all() and (maps.saliency >= 0).all() and (maps.magnitude > 0).all()
    # every image's map is scaled to mean 1, so every per-class mean map has mean 1
    np.testing.assert_allclose(maps.saliency.mean(axis=(2, 3)), 1.0, rtol=1e-5)
    # 28 samples, 4 per class: 3 of each are chosen; mean faces and alpha are those samples' own averages
    idx = pick_per_class(data.labels, 7, 3)
    grey = data.images[idx].float().mul(torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1) / 255
    for k in range(7):
        np.testing.assert_allclose(maps.mean_faces[k], grey[data.labels[idx] == k].mean(0).numpy(), atol=1e-5)
    sub = TensorSet(data.images[idx], data.targets[idx], data.labels[idx],
                    [data.ids[i] for i in idx], data.classes, [])
    res = predict(model, sub, TRANSFORM, CPU)
    np.testing.assert_allclose(maps.mean_alpha, alpha_by_class(res["alpha"], res["labels"], 7), rtol=1e-4)
    # eval mode: a sample's map does not depend on which samples share its batch
    small = latent_saliency(model, data, TRANSFORM, CPU, max_per_class=3, batch_size=4)
    np.testing.assert_allclose(small.saliency, maps.saliency, rtol=1e-4, atol=1e-6)
    assert model.training is False and all(p.requires_grad for p in model.parameters())  # state restored


class RegionTrunk(nn.Module):
    """A stand-in trunk: feature block r (16 wide) is a fixed random function of image region r only."""

    REGIONS = ((slice(0, S // 2), slice(0, S // 2)), (slice(0, S // 2), slice(S // 2, S)), (slice(S // 2, S),
                                                                                             slice(0, S)))
    num_features = 512

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.proj = nn.ParameterList(
            [nn.Parameter(torch.randn(3 * (r[0].stop - r[0].start) * (r[1].stop - r[1].start), 16, generator=g)
                          * 0.02) for r in self.REGIONS])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.num_features, dtype=x.dtype, device=x.device)
        for r, (ys, xs) in enumerate(self.REGIONS):
            out[:, 16 * r:16 * (r + 1)] = torch.tanh(x[:, :, ys, xs].flatten(1) @ self.proj[r])
        return out


def _region_model():
    """An FDRL head whose latent feature j reads only trunk block j, hence only image region j."""
    model = _tiny_fdrl(seed=3)
    model.backbone = RegionTrunk()
    with torch.no_grad():
        mask = torch.zeros_like(model.fdn.weight)  # (M, P, 512)
        for j in range(3):
            mask[j, :, 16 * j:16 * (j + 1)] = 1
        model.fdn.weight.mul_(mask)
        model.fdn.bias.fill_(1.0)  # latent units stay above the ReLU's zero: every image has a gradient
    return model.eval()


@pytest.mark.parametrize("target,method", [("alpha", "grad"), ("latent_norm", "grad"), ("alpha", "grad_x_input"),
                                           ("latent_norm", "smoothgrad")])
def test_each_latent_feature_looks_where_it_reads(data, target, method):
    maps = latent_saliency(_region_model(), data, TRANSFORM, CPU, max_per_class=4, target=target, method=method,
                           smooth_samples=3)
    masks = np.zeros((3, S, S), dtype=bool)
    for j, (ys, xs) in enumerate(RegionTrunk.REGIONS):
        masks[j, ys, xs] = True
    for j in range(3):
        share = (maps.saliency[j] * masks[j]).sum(axis=(1, 2)) / maps.saliency[j].sum(axis=(1, 2))  # per class
        assert (share > 0.999).all(), (j, share)  # a uniform map would give 0.25, 0.25 and 0.5
    assert map_similarity(maps)["between_latent_features"] < 0  # disjoint regions: anti-correlated maps


def test_plot_and_npz_round_trip(data, tmp_path):
    maps = latent_saliency(_tiny_fdrl(), data, TRANSFORM, CPU, max_per_class=1)
    maps.save_npz(tmp_path / "m.npz")
    back = LatentMaps.load_npz(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.saliency, maps.saliency)
    assert back.classes == list(CLASSES) and (back.target, back.method) == ("alpha", "grad")
    plot_latent_grid(back, tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as im:
        assert im.format == "PNG" and im.size[0] > 500


def _checkpoint(tmp_path, name: str, **kw):
    torch.manual_seed(0)
    model = fdrl.create_model(name, stem="small", **kw)
    path = tmp_path / f"{name}.pt"
    atomic_save(make_checkpoint(model, list(CLASSES), PREP, config=load_config(None, ["data.cache=false"])), path)
    return path


def test_explain_command_writes_png_and_npz(tmp_path, capsys):
    from fdrl.cli import main

    ckpt = _checkpoint(tmp_path, "fdrl_resnet18", num_latent=3, latent_dim=16, intra_out_dim=8)
    code = main(["explain", "--checkpoint", str(ckpt), "--dataset", "synthetic", "--split", "val", "--out",
                 str(tmp_path / "x"), "--per-class", "2", "--target", "latent_norm", "--option", "eval_size=21",
                 "--option", f"image_size={S}", "--device", "cpu"])
    assert code == 0 and "latent_maps.png" in capsys.readouterr().out
    maps = LatentMaps.load_npz(tmp_path / "x" / "latent_maps.npz")
    assert maps.saliency.shape == (3, 7, S, S) and maps.counts.tolist() == [2] * 7 and maps.target == "latent_norm"
    with Image.open(tmp_path / "x" / "latent_maps.png") as im:
        assert im.format == "PNG"


def test_baseline_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    from fdrl.cli import main

    ckpt = _checkpoint(tmp_path, "baseline_resnet18")
    code = main(["explain", "--checkpoint", str(ckpt), "--dataset", "synthetic", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "has no latent features" in err and "baseline_resnet18" in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="no latent features"):
        latent_saliency(fdrl.load_checkpoint(ckpt).model, None, TRANSFORM, CPU)


def test_cli_choices_are_the_library_s():
    from fdrl.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["explain"]
    opts = {a.dest: a.choices for a in sub._actions}
    assert tuple(opts["target"]) == TARGETS and tuple(opts["method"]) == METHODS


@pytest.mark.data
def test_shipped_model_on_real_fer2013(tmp_path):
    from conftest import shared
    from fdrl.engine.explain import explain_checkpoint
    from fdrl.inference.lookup import packaged_checkpoint

    maps = explain_checkpoint(packaged_checkpoint("fer2013"), "fer2013", str(shared("fer2013")), "publictest",
                              max_per_class=1, device="cpu", log=lambda _: None)
    assert maps.saliency.shape == (9, 7, 112, 112) and np.isfinite(maps.saliency).all()  # the face trunk's input
    assert maps.classes[0] == "angry" and maps.counts.tolist() == [1] * 7
