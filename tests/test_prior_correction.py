"""scripts/measure_prior_correction.py: the prior's sign and class order; it, measure_tta.py and
choose_face_margin.py refuse test splits."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import CLASSES

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "measure_prior_correction.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_large_tau_moves_every_prediction_to_the_rarest_training_class(tmp_path, img, ckpt):
    root = tmp_path / "faces"  # a folder tree with its own val/ (FER2013's PublicTest is a test split here)
    n = 0
    for c in CLASSES:  # disgust is the rarest training class (1 image), every other class has 3
        for _ in range(1 if c == "disgust" else 3):
            img(root / "train" / c / f"{1000 + n}.jpg", seed=n, mode="L")
            n += 1
        for _ in range(2):
            img(root / "val" / c / f"{1000 + n}.jpg", seed=n, mode="L")
            n += 1
    done = _run("--checkpoint", str(ckpt), "--dataset", "folder", "--root", str(root), "--taus", "0,100")
    assert done.returncode == 0, done.stderr
    plain, pushed = (json.loads(line) for line in done.stdout.splitlines())
    assert plain["n"] == pushed["n"] == 14
    # tau = 100 adds 100 * (log prior_j - log prior_disgust) >= 100 * log 3 in disgust's favour against every class
    assert pushed["recall"]["disgust"] == 1.0 and sum(pushed["recall"].values()) == 1.0
    assert pushed["accuracy"] == round(100 * 2 / 14, 2)


def test_the_scripts_that_choose_defaults_refuse_a_test_split(tmp_path):
    """FER2013's PublicTest (also under its Kaggle name ``val``) is a test split here, like PrivateTest."""
    for script in (SCRIPT, SCRIPT.with_name("measure_tta.py"), SCRIPT.with_name("choose_face_margin.py")):
        model = ["--checkpoint", str(tmp_path / "x.pt")] if script.name == "choose_face_margin.py" else ["--model",
                                                                                                          "fer2013"]
        for split in ("test", "privatetest", "publictest", "val", "test/holdout"):
            done = subprocess.run([sys.executable, str(script), *model, "--root", str(tmp_path), "--split", split],
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode != 0 and "is a test split" in done.stderr, (script.name, split, done.stderr)


def test_choose_face_margin_on_photos_as_they_are(tmp_path):
    """--as-is detects on the photo itself (no pasting) and matches the set's class names to the model's by name:
    a calm portrait in a folder named ``Neutral`` is read by the shipped model with every margin tried."""
    import shutil

    import matplotlib.cbook

    root = tmp_path / "photos"
    (root / "train" / "Neutral").mkdir(parents=True)
    (root / "train" / "Happy").mkdir(parents=True)
    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    shutil.copy(hopper, root / "train" / "Neutral" / "hopper.jpg")
    shutil.copy(hopper, root / "train" / "Happy" / "hopper.jpg")  # the same face under a wrong label
    script = SCRIPT.with_name("choose_face_margin.py")
    done = subprocess.run([sys.executable, str(script), "--checkpoint", str(Path(__file__).resolve().parents[1] / "src"
                                                                             / "fdrl" / "weights" / "fdrl_fer2013.pt"),
                           "--dataset", "folder", "--root", str(root), "--split", "train", "--as-is",
                           "--margins=0.0,0.05"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2/2 faces detected" in done.stdout  # found on the photo as it is
    assert "margin 0.00: accuracy 50.00 %" in done.stdout and "margin 0.05: accuracy 50.00 %" in done.stdout
