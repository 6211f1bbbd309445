"""scripts/ensemble_eval.py: members' probabilities averaged per sample, on the split each checkpoint builds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

import fdrl
from fdrl.checkpoint import atomic_save, make_checkpoint
from fdrl.config import Preprocessing
from fdrl.data.synthetic import CLASSES


def _script():
    spec = importlib.util.spec_from_file_location("ensemble_eval",
                                                  Path(__file__).parents[1] / "scripts" / "ensemble_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _checkpoint(path: Path, seed: int, classes=CLASSES) -> str:
    torch.manual_seed(seed)
    model = fdrl.create_model("fdrl_resnet18", num_classes=len(classes), num_latent=3, alpha_reduce="mean").eval()
    with torch.no_grad():  # a loud classifier: confident members whose mean varies from face to face
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.out_features == len(classes):
                m.weight.mul_(300)
    run = {"data": {"dataset": "synthetic", "cache_dir": str(path.parent / "cache")}, "train": {"seed": 0}}
    atomic_save(make_checkpoint(model, list(classes), Preprocessing(input_size=32, grayscale=True), config=run), path)
    return str(path)


def test_ensemble_of_a_model_with_itself_is_the_model_and_members_must_agree(tmp_path, capsys):
    ens = _script()
    a, b = _checkpoint(tmp_path / "a.pt", 0), _checkpoint(tmp_path / "b.pt", 1)
    out = tmp_path / "e.json"
    assert ens.main([a, b, a, "--dataset", "synthetic", "--split", "val", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [len(r["members"]) for r in rows] == [1, 1, 1, 2, 3]
    pa, labels, *_ = ens.member_probabilities(a, "synthetic", None, "val", "none", torch.device("cpu"), 64)
    pb, *_ = ens.member_probabilities(b, "synthetic", None, "val", "none", torch.device("cpu"), 64)
    assert len(set((pa + pb).argmax(1))) > 1  # the mean answers differ from face to face
    assert rows[3]["accuracy"] == 100 * ((pa + pb).argmax(1) == labels).mean()
    assert rows[4]["accuracy"] == 100 * ((2 * pa + pb).argmax(1) == labels).mean()
    assert rows[0]["accuracy"] == rows[2]["accuracy"] == 100 * (pa.argmax(1) == labels).mean()
    other = _checkpoint(tmp_path / "other.pt", 0, classes=[*CLASSES[1:], CLASSES[0]])
    assert ens.main([a, other, "--dataset", "synthetic", "--split", "val"]) == 2
    assert "differ" in capsys.readouterr().err
    assert ens.main([a, "--dataset", "synthetic"]) == 2
