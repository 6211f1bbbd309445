import pytest
import torch

import fdrl
from fdrl.checkpoint import CheckpointError, atomic_save, load_checkpoint, make_checkpoint
from fdrl.config import Preprocessing
from fdrl.losses import LossConfig
from fdrl.optim import OptimConfig, SchedConfig, build_optimizer, build_scheduler, param_groups


@pytest.mark.parametrize("centre_update", ["wen", "learned"])
def test_every_trainable_parameter_in_exactly_one_group(centre_update):
    model = fdrl.create_model("fdrl_resnet18", num_classes=7)
    crit = fdrl.create_criterion(model, LossConfig(centre_update=centre_update))
    groups = param_groups(model, crit, OptimConfig(weight_decay=5e-4))
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen))
    expected = {id(p) for p in model.parameters()} | {id(p) for p in crit.parameters()}
    assert set(seen) == expected
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0
    assert by_name["heads_decay"]["weight_decay"] == 5e-4
    if centre_update == "learned":
        assert by_name["centres"]["weight_decay"] == 0.0
    else:
        assert "centres" not in by_name
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            n = names.get(id(p), "centre")
            if n.endswith("bias") or p.ndim == 1:
                assert g["weight_decay"] == 0.0, n


def test_old_checkpoint_without_detector_in_preprocessing_loads(tmp_path):
    """Before the detector joined the preprocessing record it lived in the run config's data.face_detector,
    and model configs had no trunk field."""
    from fdrl.config import load_config, to_dict

    model = fdrl.create_model("fdrl_resnet18", num_classes=7, num_latent=3)
    cfg = to_dict(load_config(None, ["model.num_latent=3"]))
    del cfg["data"]["preprocessing"]["face_detector"]
    cfg["data"]["face_detector"] = "opencv"
    ck = make_checkpoint(model, list("abcdefg"), Preprocessing(input_size=48), fdrl.create_criterion(model),
                         config=cfg)
    del ck["preprocessing"]["face_detector"], ck["model_config"]["trunk"]
    atomic_save(ck, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt", with_criterion=True)
    assert loaded.face_detector == "opencv" and loaded.preprocessing.face_detector == "opencv"
    assert loaded.preprocessing.input_size == 48 and loaded.model.config.trunk == "resnet18"
    assert loaded.criterion is not None  # the old config still parses (data.face_detector moved, not lost)
    atomic_save(make_checkpoint(model, list("abcdefg"), Preprocessing(face_detector="dlib")), tmp_path / "new.pt")
    assert load_checkpoint(tmp_path / "new.pt").face_detector == "dlib"


def test_paper_recipe_defaults():
    cfg, sched = OptimConfig(), SchedConfig()
    assert (cfg.name, cfg.lr, cfg.betas, cfg.weight_decay) == ("adam", 1e-4, (0.5, 0.999), 0.0)
    model = fdrl.create_model("baseline_resnet18", num_classes=3)
    opt = build_optimizer(model, None, cfg)
    s = build_scheduler(opt, sched, epochs=40)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    assert lrs[9] == pytest.approx(1e-4) and lrs[10] == pytest.approx(1e-5)
    assert lrs[18] == pytest.approx(1e-6) and lrs[32] == pytest.approx(1e-8)


def _trained_pair():
    torch.manual_seed(1)
    model = fdrl.create_model("fdrl_resnet18", num_classes=4, num_latent=3)
    crit = fdrl.create_criterion(model).train()
    opt = build_optimizer(model, crit, OptimConfig())
    parts = crit(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    parts["loss"].backward()
    opt.step()
    return model.eval(), crit, opt


def test_checkpoint_round_trip_identical_logits_and_centres(tmp_path):
    model, crit, opt = _trained_pair()
    prep = Preprocessing(input_size=48, grayscale=True)
    path = tmp_path / "ck.pt"
    atomic_save(make_checkpoint(model, ["a", "b", "c", "d"], prep, crit, opt, epoch=3), path)
    loaded = load_checkpoint(path, with_criterion=True)
    x = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(loaded.model(x).logits, model(x).logits, rtol=0, atol=0)
    torch.testing.assert_close(loaded.criterion.feature_centres, crit.feature_centres)
    assert crit.feature_centres.abs().sum() > 0
    assert loaded.classes == ["a", "b", "c", "d"] and loaded.preprocessing.grayscale
    assert loaded.preprocessing.input_size == 48 and loaded.raw["epoch"] == 3
    assert loaded.model.config.num_latent == 3


def test_corrupt_foreign_and_pickled_checkpoints_fail_clearly(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(bad)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an fdrl checkpoint"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "fdrl-checkpoint", "obj": OptimConfig()}, pickled)
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(pickled)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_other_architecture_fails_clearly(tmp_path):
    model, _, _ = _trained_pair()
    ck = make_checkpoint(model, list("abcd"), Preprocessing())
    ck["model_name"] = "baseline_resnet18"
    ck["model_config"] = {"num_classes": 4}
    path = tmp_path / "mixed.pt"
    atomic_save(ck, path)
    with pytest.raises(CheckpointError, match="do not match architecture"):
        load_checkpoint(path)


def test_half_checkpoint_loads_as_float(tmp_path):
    model, _, _ = _trained_pair()
    path = tmp_path / "half.pt"
    atomic_save(make_checkpoint(model, list("abcd"), Preprocessing(), half=True), path)
    loaded = load_checkpoint(path)
    assert next(loaded.model.parameters()).dtype == torch.float32
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x).logits, model(x).logits, rtol=1e-2, atol=1e-2)


def test_loaded_checkpoint_prints_short(tmp_path):
    model, crit, opt = _trained_pair()
    path = tmp_path / "ck.pt"
    metrics = {"val_accuracy": 0.612345678, "confusion": [[1, 2], [3, 4]] * 50}
    atomic_save(make_checkpoint(model, ["a", "b", "c", "d"], Preprocessing(input_size=48), crit, opt, epoch=3,
                                metrics=metrics), path)
    text = repr(load_checkpoint(path))
    assert len(text) < 600, f"repr is {len(text)} characters"
    assert text.startswith("LoadedCheckpoint(model='fdrl_resnet18', classes=['a', 'b', 'c', 'd'], preprocessing=")
    assert "input_size=48" in text and "epoch=3" in text and "'val_accuracy': 0.6123" in text
    assert "confusion" not in text and "tensor" not in text


def test_interrupted_checkpoint_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    """A write that dies half-way (disk full, a kill) must leave the previous checkpoint byte for byte, and no
    partial file beside it: the new one is written to a temporary file and renamed over the old only when
    complete."""
    model = fdrl.create_model("baseline_resnet18", num_classes=4)
    path = tmp_path / "last.pt"
    atomic_save(make_checkpoint(model, list("abcd"), Preprocessing(), epoch=1), path)
    before = path.read_bytes()

    def dies_half_way(obj, fh, *args, **kwargs):
        fh.write(before[: len(before) // 2])
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="no space left"):
        atomic_save(make_checkpoint(model, list("abcd"), Preprocessing(), epoch=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path).raw["epoch"] == 1
