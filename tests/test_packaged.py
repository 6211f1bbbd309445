"""Shipped models by name, and test-time augmentation in ``Recognizer``."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CLASSES, write_image
from fdrl.checkpoint import CheckpointError
from fdrl.cli import main
from fdrl.inference.lookup import packaged_checkpoint
from fdrl.inference.packaged import DEFAULT_TTA, PACKAGED_MODELS, TTA_MODES
from fdrl.inference.recognizer import Recognizer


def test_every_packaged_model_is_installed_with_its_card():
    for name in PACKAGED_MODELS:
        path = packaged_checkpoint(name)
        assert path.is_file() and path.stat().st_size < 30 * 2**20
        rec = Recognizer(model=name, detector="none")
        assert rec.checkpoint == str(path) and len(rec.classes) >= 7
    from fdrl.inference.packaged import MODEL_CARDS

    assert set(MODEL_CARDS) == set(PACKAGED_MODELS)
    for card in MODEL_CARDS.values():
        assert (packaged_checkpoint().parent / card).is_file()


def test_model_names_and_tta_are_checked(ckpt):
    with pytest.raises(CheckpointError, match="available: fer2013"):
        Recognizer(model="affectnet")
    with pytest.raises(ValueError, match="either"):
        Recognizer(ckpt, model="fer2013")
    with pytest.raises(ValueError, match="tta"):
        Recognizer(ckpt, tta="mirror")
    assert DEFAULT_TTA in TTA_MODES


def test_tta_averages_the_views(ckpt):
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (5, 1, 40, 40), dtype=np.uint8))
    plain = Recognizer(ckpt, detector="none", tta="none")
    flip = Recognizer(ckpt, detector="none", tta="flip")

    def probs(rec, batch):
        return np.array([[f.probabilities[c] for c in CLASSES] for f in rec.predict_tensor(batch).faces])

    expected = (probs(plain, x) + probs(plain, x.flip(-1))) / 2
    np.testing.assert_allclose(probs(flip, x), expected, atol=1e-6)
    assert not np.allclose(probs(flip, x), probs(plain, x), atol=1e-4)  # the flip view really is different
    ten = Recognizer(ckpt, detector="none", tta="tencrop").predict_tensor(x)
    p = np.array([[f.probabilities[c] for c in CLASSES] for f in ten.faces])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert ten.faces[0].alpha is not None and len(ten.faces[0].alpha) == 3


def test_cli_predict_with_a_shipped_model_and_tta(tmp_path, capsys):
    face = write_image(tmp_path / "face.png", (48, 48))
    assert main(["predict", str(face), "--model", "fer2013", "--tta", "tencrop", "--detector", "none",
                 "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["faces"]) == 1 and out["faces"][0]["label"] in CLASSES
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "shipped model 'fer2013'" in text
    about = text.split("shipped model 'fer2013'")[1].splitlines()[1]  # what the file says about itself
    assert about.strip().startswith("7 classes (angry, disgust") and "dlib_resnet29 at 112 px" in about
    assert "trained on fer2013 train/fit" in about and "train/holdout accuracy 68.94 % at epoch 38" in about
    assert Path(about.split("card ")[1]).is_file()


def _ship_model():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("ship_model", Path(__file__).parents[1] / "scripts" / "ship_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ship_model_writes_fp16_without_optimiser_and_refuses_runs_selected_on_a_test_split(tmp_path, capsys):
    import fdrl
    from fdrl.checkpoint import atomic_save, make_checkpoint, read_checkpoint
    from fdrl.config import Preprocessing

    torch.manual_seed(0)
    model = fdrl.create_model("fdrl_resnet18", num_classes=7, num_latent=3, alpha_reduce="mean")
    opt = torch.optim.Adam(model.parameters())
    prep = Preprocessing(input_size=40, grayscale=True, source_size=32)
    run = {"data": {"dataset": "fer2013", "val_split": "train/holdout", "test_split": "publictest"}}
    atomic_save(make_checkpoint(model, CLASSES, prep, optimizer=opt, config=run), tmp_path / "best.pt")
    ship = _ship_model()
    assert ship.main(["--checkpoint", str(tmp_path / "best.pt"), "--name", "fer2013", "--out-dir", str(tmp_path)]) == 0
    assert "sha256" in capsys.readouterr().out
    raw = read_checkpoint(tmp_path / PACKAGED_MODELS["fer2013"])
    assert "optimizer_state" not in raw and raw["preprocessing"]["source_size"] == 32
    assert all(v.dtype == torch.float16 for v in raw["model_state"].values() if v.is_floating_point())
    rec = Recognizer(tmp_path / PACKAGED_MODELS["fer2013"], detector="none")
    assert rec.prep.source_size == 32 and rec.classes == CLASSES
    for val in ("val", "publictest"):  # FER2013's PublicTest under both names: the test split here
        run["data"].update(val_split=val, test_split=None)
        atomic_save(make_checkpoint(model, CLASSES, prep, config=run), tmp_path / "tested.pt")
        with pytest.raises(SystemExit, match=f"selected the checkpoint on fer2013's test split '{val}'"):
            ship.main(["--checkpoint", str(tmp_path / "tested.pt"), "--name", "fer2013", "--out-dir", str(tmp_path)])


def test_ferplus_model_by_name_with_contempt(tmp_path, capsys):
    rec = Recognizer(model="ferplus", detector="none")
    assert rec.checkpoint.endswith("fdrl_ferplus.pt")
    assert rec.classes == ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    face = write_image(tmp_path / "face.png", (48, 48))
    assert main(["predict", str(face), "--model", "ferplus", "--detector", "none", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["faces"][0]["probabilities"]) == rec.classes  # the model's class order, not alphabetical
    assert main(["models"]) == 0
    assert "shipped model 'ferplus'" in capsys.readouterr().out


@pytest.mark.data
def test_ferplus_model_recognises_real_happiness():
    from conftest import shared
    from fdrl.data import create_dataset

    ds = create_dataset("ferplus", str(shared("ferplus")), "val")
    happy = [s.path for s, y in zip(ds.samples, ds.labels, strict=True) if ds.classes[y] == "happiness"][:40]
    res = Recognizer(model="ferplus", detector="none").predict(happy)
    assert len(res.faces) == 40
    assert sum(f.label == "happiness" for f in res.faces) >= 30  # recall on FER2013Valid: see MODEL_CARD_ferplus.md
