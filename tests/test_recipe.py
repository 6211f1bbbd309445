"""Recipe switches of the FER2013 search: small stem, amp=auto, mixup/cutmix, logit adjustment, plateau."""

import json

import pytest
import torch
import torch.nn.functional as F

import fdrl
from fdrl import runtime as amp_mod
from fdrl.config import ConfigError, load_config
from fdrl.data.mix import mix_batch
from fdrl.engine.trainer import TrainingStopped, train
from fdrl.losses import FDRLCriterion, LossConfig
from fdrl.models import ModelOutput
from fdrl.optim import SchedConfig, build_scheduler
from test_engine import TINY


@pytest.mark.parametrize("name", ["fdrl_resnet18", "baseline_resnet18"])
def test_small_stem_keeps_resolution_and_round_trips(tmp_path, name):
    maps = {}
    for stem in ("imagenet", "small"):
        model = fdrl.create_model(name, num_classes=7, stem=stem).eval()
        model.backbone.layer4.register_forward_hook(lambda m, i, o, s=stem: maps.__setitem__(s, o.shape[-2:]))
        assert model(torch.randn(2, 3, 48, 48)).logits.shape == (2, 7)
    assert tuple(maps["imagenet"]) == (2, 2) and tuple(maps["small"]) == (3, 3)
    model = fdrl.create_model(name, num_classes=7, stem="small")
    assert model.backbone.conv1.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="stem"):
        fdrl.create_model(name, num_classes=7, stem="tiny")


def test_small_stem_checkpoint_rebuilds_the_same_trunk(tmp_path):
    train(load_config(None, [*TINY, "train.epochs=1", "trunk.stem=small", "report.plots=false"]), tmp_path)
    loaded = fdrl.load_checkpoint(tmp_path / "best.pt")
    assert loaded.model.config.stem == "small" and loaded.model.backbone.conv1.kernel_size == (3, 3)


def test_amp_auto_picks_bf16_only_on_amx_cpus(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(amp_mod, "cpu_has_amx_bf16", lambda: True)
    assert amp_mod.resolve_amp("auto", cpu) == "bf16"
    monkeypatch.setattr(amp_mod, "cpu_has_amx_bf16", lambda: False)
    assert amp_mod.resolve_amp("auto", cpu) == "none"
    assert amp_mod.resolve_amp("fp16", cpu) == "fp16"
    assert amp_mod.amp_dtype("bf16", cpu) is torch.bfloat16 and amp_mod.amp_dtype("none", cpu) is None
    assert amp_mod.amp_dtype("auto", cpu) is None  # no AMX: full precision
    with pytest.raises(ValueError, match="fp8"):
        amp_mod.resolve_amp("fp8", cpu)
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(None, ["train.amp=fp8"])


def test_amx_flag_is_read_from_cpuinfo():
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    amp_mod.cpu_has_amx_bf16.cache_clear()
    assert amp_mod.cpu_has_amx_bf16() == (" amx_bf16" in flags)


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixing_gives_distributions_that_match_the_pixels(mode):
    x = torch.zeros(8, 3, 16, 16)
    x[:4] = 1.0  # samples 0-3 white (class 1), 4-7 black (class 0)
    y = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    out, soft = mix_batch(x, y, 3, mode, 1.0, torch.Generator().manual_seed(3))
    assert soft.shape == (8, 3)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    assert (soft[:, 2] == 0).all()
    # the share of class 1 in the target equals the share of white pixels in the image
    torch.testing.assert_close(soft[:, 1], out.mean(dim=(1, 2, 3)), atol=1e-5, rtol=0)
    again, soft2 = mix_batch(x, y, 3, mode, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(out, again) and torch.equal(soft, soft2)  # a pure function of the generator
    assert mix_batch(x, y, 3, "none", 1.0)[1] is y


def test_logit_adjustment_shifts_training_logits_by_the_log_prior():
    crit = FDRLCriterion(3, 1, 1, LossConfig(logit_adjust=1.0))
    crit.set_class_prior(torch.tensor([80, 15, 5]))
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    out = ModelOutput(logits=logits, feature=logits, basic=logits)
    prior = torch.tensor([0.80, 0.15, 0.05])
    torch.testing.assert_close(crit.train()(out, y)["cls"], F.cross_entropy(logits + prior.log(), y))
    torch.testing.assert_close(crit.eval()(out, y)["cls"], F.cross_entropy(logits, y))  # reports stay plain


def test_plateau_drops_the_lr_after_patience_epochs():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, SchedConfig(name="plateau", patience=1, gamma=0.5), 10)
    for acc in (0.5, 0.6, 0.6, 0.6):
        sched.step(acc)
    assert opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="warmup"):
        SchedConfig(name="plateau", warmup_epochs=1)


def test_resume_is_exact_with_cutmix_logit_adjustment_and_plateau(tmp_path):
    recipe = [*TINY, "train.mix=cutmix", "loss.logit_adjust=1.0", "sched.name=plateau", "sched.patience=0",
              "report.plots=false", "report.tsne=false"]
    full = train(load_config(None, recipe), tmp_path / "full")
    with pytest.raises(TrainingStopped):
        train(load_config(None, [*recipe, "train.stop_after_steps=8"]), tmp_path / "killed")
    resumed = train(load_config(None, recipe), tmp_path / "killed", resume=True)
    assert resumed["final_weights_digest"] == full["final_weights_digest"]
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["train_accuracy"] <= 1.0 for r in rows)
