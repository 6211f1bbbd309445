"""Recipes shipped in the package: each says only what differs from its base, the baseline twin is a switch, the
trunk section survives a change of model, the trunk owns its normalisation, and older configs and checkpoints
resolve as they did."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import fdrl
from fdrl.checkpoint import read_checkpoint
from fdrl.cli import main
from fdrl.config import ConfigError, TrainConfig, dump_yaml, from_dict, load_config, to_dict
from fdrl.errors import UnknownRecipeError
from fdrl.models import make_config
from fdrl.models.dlib_resnet import PIXEL_MEAN, PIXEL_STD
from fdrl.models.resnet import IMAGENET_MEAN, IMAGENET_STD
from fdrl.models.trunks import trunk_input
from fdrl.recipes import describe, list_recipes, recipe_dir
from fdrl.shipped import PACKAGED_MODELS, shipped_file

ROOT = Path(__file__).resolve().parents[1]
# How each YAML file of the former configs/ folder resolved under its own loader (to_dict of the TrainConfig).
LEGACY = json.loads((ROOT / "tests" / "data" / "legacy_configs_resolved.json").read_text())
# Each of them as a packaged recipe, its --baseline twin, and --set overrides (the docs' old -> new table).
LEGACY_AS_RECIPES = {
    "_paper": ("rafdb", False, ["data.dataset=synthetic"]),  # the paper's base had no data set
    **{name: (name.removesuffix("_baseline"), name.endswith("_baseline"), []) for name in LEGACY if name != "_paper"},
}


def test_the_recipes_are_few_and_say_only_what_they_set():
    names = list_recipes()
    assert 1 < len(names) <= 12 and set(names) == {p.stem for p in recipe_dir().glob("*.yaml")}
    for name in names:
        text = (recipe_dir() / f"{name}.yaml").read_text()
        raw = yaml.safe_load(text)
        assert describe(name) and "\n" not in describe(name), f"{name}: no one-line description"
        prep = (raw.get("data") or {}).get("preprocessing") or {}
        assert not {"mean", "std"} & set(prep), f"{name}: the trunk owns its normalisation"
        assert "model_name" not in raw, f"{name}: the baseline twin is --baseline, not a file"


# Deliberate changes since those files: AffectNet uses the decode cache, now a mapped file shared by a node's ranks.
CHANGED = {"affectnet": {"data": {"cache": True}}, "affectnet_baseline": {"data": {"cache": True}}}


@pytest.mark.parametrize("legacy", sorted(LEGACY))
def test_every_legacy_config_resolves_the_same_as_its_recipe(legacy):
    recipe, baseline, overrides = LEGACY_AS_RECIPES[legacy]
    new = load_config(recipe, overrides, baseline=baseline)
    old = json.loads(json.dumps(LEGACY[legacy]))
    for section, values in CHANGED.get(legacy, {}).items():
        assert all(old[section][k] != v for k, v in values.items()), f"{legacy}: no longer a change"
        old[section].update(values)
    # The whole config, once the old trunk keys of `model` are read into the trunk section (as for old checkpoints)
    assert to_dict(from_dict(TrainConfig, old)) == to_dict(new)
    # ... the model it builds, with no help from that reading ...
    assert make_config(old["model_name"], **old["model"]) == make_config(new.model_name, **new.model_options())
    # ... and the preprocessing numbers, bit for bit.
    assert to_dict(new)["data"]["preprocessing"] == old["data"]["preprocessing"]


@pytest.mark.parametrize("how", ["flag", "override"])
def test_the_baseline_switch_keeps_the_trunk_and_the_recipe(how):
    fd = load_config("fer2013_dlib", ["trunk.freeze=all_but_last", "model.num_latent=3"])
    args = ([], True) if how == "flag" else (["model_name=baseline_resnet18"], False)
    base = load_config("fer2013_dlib", ["trunk.freeze=all_but_last", "model.num_latent=3", *args[0]],
                       baseline=args[1])
    assert base.model_name == "baseline_resnet18" and base.model == {}  # FDRL's head options went with FDRL
    assert base.trunk == fd.trunk and base.trunk.name == "dlib_resnet29" and base.trunk.freeze == "all_but_last"
    for section in ("loss", "optim", "sched", "data", "train", "report"):
        assert getattr(base, section) == getattr(fd, section), section


def test_head_options_after_a_switch_of_model_belong_to_the_new_model():
    back = load_config("sfew", ["model_name=baseline_resnet18", "model_name=fdrl_resnet18", "model.num_latent=4"])
    assert back.model == {"num_latent": 4} and back.trunk.name == "dlib_resnet29"  # sfew's alpha switches are gone
    with pytest.raises(ConfigError, match="baseline_resnet18: unknown config field.*num_latent"):
        load_config("fer2013", ["model_name=baseline_resnet18", "model.num_latent=3"])


def test_the_trunk_owns_its_normalisation():
    assert load_config("fer2013").data.preprocessing.mean == IMAGENET_MEAN
    moved = load_config("fer2013", ["trunk.name=dlib_resnet29", "data.preprocessing.input_size=112"])
    assert (moved.data.preprocessing.mean, moved.data.preprocessing.std) == (PIXEL_MEAN, PIXEL_STD)
    assert load_config("sfew").data.preprocessing.std == PIXEL_STD == trunk_input("dlib_resnet29").std
    mine = load_config("sfew", ["data.preprocessing.mean=[0.5, 0.5, 0.5]"]).data.preprocessing
    assert mine.mean == (0.5, 0.5, 0.5) and mine.std == PIXEL_STD  # what a recipe sets wins, key by key
    reset = load_config("sfew", ["data.preprocessing.mean=[0.5, 0.5, 0.5]", "data.preprocessing.mean=null"])
    assert reset.data.preprocessing.mean == PIXEL_MEAN  # null: the trunk's again
    assert load_config(None).data.preprocessing.std == IMAGENET_STD
    # the resolved numbers are what a run writes down, so a checkpoint alone rebuilds the preprocessing
    written = yaml.safe_load(dump_yaml(load_config("fer2013_dlib")))["data"]["preprocessing"]
    assert tuple(written["mean"]) == PIXEL_MEAN and tuple(written["std"]) == PIXEL_STD


def test_the_trunks_minimum_input_is_checked_by_the_config():
    with pytest.raises(ConfigError, match=r"input_size=48 is below the minimum of trunk 'dlib_resnet29' \(103 px"):
        load_config("fer2013", ["trunk.name=dlib_resnet29"])


@pytest.mark.parametrize("name", list(PACKAGED_MODELS))
def test_shipped_checkpoints_rebuild_from_their_old_configs(name):
    """The shipped models' configs keep the trunk in ``model``: read into the trunk section, they rebuild the
    same model config, and the model built from the training config alone computes what the checkpoint's does."""
    path = shipped_file(name)
    ck = read_checkpoint(path)
    assert "trunk" in ck["config"]["model"] and "trunk" not in ck["config"]  # written before the trunk section
    cfg = from_dict(TrainConfig, ck["config"])
    assert (cfg.trunk.name, cfg.trunk.pretrained_path, cfg.model) == ("dlib_resnet29", "dlib", {"alpha_reduce": "mean"})
    k = len(ck["classes"])
    assert make_config(cfg.model_name, num_classes=k, **cfg.model_options()) == \
        make_config(ck["model_name"], **ck["model_config"])
    loaded = fdrl.load_checkpoint(path, with_criterion=True)
    assert loaded.criterion is not None  # the criterion is built from the same old config
    rebuilt = fdrl.create_model(cfg.model_name, num_classes=k, **{**cfg.model_options(), "pretrained_path": None})
    rebuilt.load_state_dict(loaded.model.state_dict())
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x).logits, loaded.model(x).logits, rtol=0, atol=0)
    assert loaded.preprocessing.mean == PIXEL_MEAN and loaded.preprocessing.std == PIXEL_STD


def test_a_user_file_inherits_a_recipe_by_name_and_older_keys_still_read(tmp_path):
    (tmp_path / "mine.yaml").write_text("inherit: fer2013_dlib\ntrain: {epochs: 3}\n")
    (tmp_path / "old.yaml").write_text(  # the former layout: the trunk in `model`, a relative file as base
        "inherit: mine.yaml\nmodel: {trunk: dlib_resnet29, freeze: all, alpha_reduce: l1}\n")
    (tmp_path / "twin.yaml").write_text("inherit: old.yaml\nmodel_name: baseline_resnet18\n")
    mine = load_config(tmp_path / "mine.yaml")
    assert mine.train.epochs == 3 and mine.trunk.name == "dlib_resnet29" and mine.train.amp == "auto"
    old = load_config(str(tmp_path / "old.yaml"))
    assert old.trunk.freeze == "all" and old.trunk.pretrained_path == "dlib" and old.model == {"alpha_reduce": "l1"}
    twin = load_config(tmp_path / "twin.yaml")
    assert twin.model == {} and twin.trunk == old.trunk  # the twin file now keeps the trunk without restating it
    assert load_config(None, ["model.stem=small"]).trunk.stem == "small"  # an older --set key
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    with pytest.raises(ConfigError, match="inherit cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="belong to the trunk section"):
        TrainConfig(model={"trunk": "dlib_resnet29"})


def test_an_unknown_recipe_lists_the_packaged_ones(capsys):
    with pytest.raises(UnknownRecipeError, match=r"unknown recipe 'fer2031'; did you mean fer2013.*available: "):
        load_config("fer2031")
    with pytest.raises(ConfigError, match=r"--recipe fer2013_dlib --baseline"):
        load_config("fer2013_dlib_baseline")
    with pytest.raises(ConfigError, match=r"'configs/sfew.yaml' does not exist; .*--recipe sfew$"):
        load_config("configs/sfew.yaml")
    assert main(["train", "--recipe", "nope", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "fdrl train: error: unknown recipe 'nope'" in err and all(n in err for n in list_recipes())
    assert main(["train", "--recipe", "my.yaml", "--out", "unused"]) == 2
    assert "a YAML file goes to --config" in capsys.readouterr().err


def test_fdrl_recipes_lists_each_with_its_line_and_prints_one_resolved(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in list_recipes():
        assert any(re.fullmatch(rf"{name} +{re.escape(describe(name))}", line) for line in lines), name
    assert main(["recipes", "sfew", "--baseline"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == to_dict(load_config("sfew", baseline=True)) and printed["model_name"] == "baseline_resnet18"


def test_docs_and_scripts_name_packaged_recipes_only():
    """Every ``fdrl train --recipe NAME`` in the README, docs, model cards, scripts and the demo's closing hint names
    a packaged recipe; nothing points at a configs/ folder."""
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "scripts").glob("*.*"),
             ROOT / "src" / "fdrl" / "cli" / "training.py", *(ROOT / "src" / "fdrl" / "weights").glob("*.md")]
    known = set(list_recipes())
    for f in files:
        text = f.read_text()
        assert "configs/" not in text, f"{f.name} points at configs/"
        named = set(re.findall(r"train --recipe[ =]([A-Za-z0-9_]+)", text)) - {"NAME"}
        assert named <= known, f"{f.name} names unknown recipes {sorted(named - known)}"


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None or importlib.util.find_spec("pip") is None,
                    reason="building the wheel offline needs setuptools and pip in this environment")
def test_a_plain_wheel_install_has_the_recipes(tmp_path):
    """Built as pip builds it and installed without the source tree: ``fdrl recipes`` lists the recipes and
    ``fdrl train --recipe NAME --set data.root=...`` resolves one, from a folder far from the tree (the run stops
    at the missing data, after writing the resolved config)."""
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", tree / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"),
                    str(tree)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("fdrl-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}

    def fdrl_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "import sys, fdrl.cli; print(fdrl.cli.__file__, file=sys.stderr); "
                               "sys.exit(fdrl.cli.main())", *args], cwd=away, env=env, capture_output=True,
                              text=True, timeout=300)

    listed = fdrl_cli("recipes")
    assert listed.returncode == 0 and Path(listed.stderr.strip()).is_relative_to(site)  # the installed copy
    assert all(f"{name} " in listed.stdout for name in list_recipes())
    missing = away / "no_fer2013_here"
    res = fdrl_cli("train", "--recipe", "fer2013_dlib_long", "--set", f"data.root={missing}", "--out", "run")
    assert res.returncode == 2 and "no_fer2013_here" in res.stderr and "recipe" not in res.stderr, res.stderr
    written = yaml.safe_load((away / "run" / "config.yaml").read_text())
    assert written == to_dict(load_config("fer2013_dlib_long", [f"data.root={missing}"]))
