"""The project's guarantees, each checked against an expectation worked out here (by hand or by an independent
computation), never against a figure the code under test wrote itself:

- validation figures come from the validation split;
- the selected checkpoint follows ``train.select`` and validation, never the test split;
- ``--resume`` across a learning-rate step continues the schedule;
- a checkpoint holding pickled code is refused by what it holds, and the code never runs;
- reported accuracy is the fraction of correct predictions (not the mean class recall);
- Wen's centre rule gives every DDP rank the centres of the union of their batches;
- ``crop_face`` levels the eyes.
"""

import hashlib
import json
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image, ImageDraw

import fdrl
from fdrl.config import load_config
from fdrl.engine.trainer import TrainingStopped, train
from test_engine import TINY

SMALL = [*TINY,  # on fewer faces: 3 batches of 16 per epoch, 21 val and 21 test faces; no plots
         "data.options={train_size: 48, eval_size: 21, image_size: 32}", "report.plots=false", "report.tsne=false"]


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---- 1. validation figures come from the validation split ----------------------------------------------------------

def _figures_by_hand(model: torch.nn.Module, split: str, prep) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on the synthetic ``split`` (21 faces, 32 px), from the drawn
    pixels, without the package's loaders, transforms or metrics."""
    from fdrl.data.synthetic import synthetic_samples

    samples = synthetic_samples(split, 21, 32, seed=0)
    x = torch.from_numpy(np.stack([s.pixels for s in samples])).permute(0, 3, 1, 2).double() / 255.0
    x = ((x - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(prep.std).view(1, 3, 1, 1)).float()
    y = torch.tensor([s.label for s in samples])
    with torch.no_grad():
        logits = model.eval()(x).logits.double()
    nll = -torch.log_softmax(logits, -1)[torch.arange(len(y)), y]
    nll = nll.clamp_max(-math.log(1e-12))  # the logged loss floors each probability at 1e-12
    return (logits.argmax(-1) == y).double().mean().item(), nll.mean().item()


def test_logged_val_figures_are_the_val_splits(tmp_path):
    """Every epoch's val_accuracy and val_loss (metrics.jsonl, the checkpoint's metrics, the summary) are those of
    that epoch's weights on the val split, recomputed here; the test split gives another loss, so a run that
    validated on it would be caught (lr 3e-3: far enough from the uniform start that the two splits differ)."""
    s = train(load_config(None, [*SMALL, "train.epochs=2", "optim.lr=0.003"]), tmp_path)
    rows = _rows(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    checked = set()
    for which in ("best", "last"):
        loaded = fdrl.load_checkpoint(tmp_path / f"{which}.pt")
        epoch = loaded.raw["epoch"]
        acc, loss = _figures_by_hand(loaded.model, "val", loaded.preprocessing)
        _, test_loss = _figures_by_hand(loaded.model, "test", loaded.preprocessing)
        assert abs(test_loss - loss) > 1e-2  # the two splits tell apart
        row = rows[epoch - 1]
        assert row["val_accuracy"] == pytest.approx(acc, abs=1e-9), (which, epoch)
        assert row["val_loss"] == pytest.approx(loss, rel=1e-5), (which, epoch)
        assert loaded.raw["metrics"]["val_loss"] == pytest.approx(loss, rel=1e-5)
        assert s[which]["val_accuracy"] == pytest.approx(acc, abs=1e-9)
        checked.add(epoch)
    assert 2 in checked  # last.pt is epoch 2; best.pt adds epoch 1 when it was the better one
    best_epoch = 1 + max(range(2), key=lambda i: (rows[i]["val_accuracy"], -i))
    assert s["best"]["epoch"] == best_epoch


# ---- 2. the selected checkpoint follows train.select and validation ------------------------------------------------

@pytest.mark.parametrize("select", ["val", "last"])
def test_selection_follows_val_and_select_never_test(tmp_path, monkeypatch, select):
    """Validation is scripted so that epoch 1 is best on val (0.9 against 0.1), and the test predictions so that the
    checkpoint which must NOT be selected is the one perfect on test: the summary's pick and test accuracy must
    follow ``train.select`` (val: best.pt = epoch 1; last: last.pt = epoch 2) all the same."""
    from fdrl.engine import trainer

    val_acc = {1: 0.9, 2: 0.1}
    wanted = {"val": ("best", 1), "last": ("last", 2)}[select]
    perfect_on_test = 3 - wanted[1]  # the other epoch
    epoch_of: dict[str, int] = {}

    def scripted_validate(model, data, transform, device, t):
        epoch = len(epoch_of) + 1
        epoch_of[_digest(model)] = epoch
        return {"val_accuracy": val_acc[epoch], "val_mean_class_accuracy": val_acc[epoch], "val_loss": 1.0}

    real_predict = trainer.predict

    def scripted_predict(model, data, *args, **kwargs):
        res = real_predict(model, data, *args, **kwargs)
        labels = res["labels"]
        res["preds"] = labels.copy() if epoch_of[_digest(model)] == perfect_on_test else (labels + 1) % 7
        return res

    monkeypatch.setattr(trainer, "validate", scripted_validate)
    monkeypatch.setattr(trainer, "predict", scripted_predict)
    s = train(load_config(None, [*SMALL, "train.epochs=2", f"train.select={select}"]), tmp_path)
    assert len(epoch_of) == 2  # two distinct epochs' weights
    assert (s["best"]["epoch"], s["last"]["epoch"]) == (1, 2)
    by_epoch = {s["best"]["epoch"]: "best", s["last"]["epoch"]: "last"}
    assert s[by_epoch[perfect_on_test]]["test_accuracy"] == 1.0
    assert s[by_epoch[wanted[1]]]["test_accuracy"] == 0.0
    assert s["selected"] == wanted[0]
    assert s["test_accuracy"] == 0.0 and s["test_mean_class_accuracy"] == 0.0
    assert json.loads((tmp_path / "summary.json").read_text())["selected"] == wanted[0]


# ---- 3. --resume across a learning-rate step -----------------------------------------------------------------------

def test_resume_across_a_learning_rate_step_keeps_the_schedule(tmp_path):
    """multistep with a milestone after epoch 1 (gamma 0.1): epochs train at 1e-3, 1e-4, 1e-4. A run killed in
    epoch 2 and resumed from epoch 1's last.pt must train epochs 2 and 3 at 1e-4 and end with the weights of the
    uninterrupted run; a scheduler restarted from scratch would take another step at its milestone (1e-5)."""
    cfg = [*SMALL, "train.epochs=3", "sched.name=multistep", "sched.milestones=[1]", "sched.gamma=0.1"]
    full = train(load_config(None, cfg), tmp_path / "full")
    with pytest.raises(TrainingStopped):
        train(load_config(None, [*cfg, "train.stop_after_steps=4"]), tmp_path / "killed")  # epoch 2, step 1
    assert [r["epoch"] for r in _rows(tmp_path / "killed")] == [1]
    resumed = train(load_config(None, cfg), tmp_path / "killed", resume=True)
    hand = [1e-3, 1e-4, 1e-4]
    assert [r["lr"] for r in _rows(tmp_path / "full")] == pytest.approx(hand, rel=1e-9)
    assert [r["lr"] for r in _rows(tmp_path / "killed")] == pytest.approx(hand, rel=1e-9)
    assert resumed["final_weights_digest"] == full["final_weights_digest"]
    assert fdrl.load_checkpoint(tmp_path / "killed" / "last.pt").raw["scheduler_state"]["last_epoch"] == 3


# ---- 4. pickled code in a checkpoint is refused, and never runs ----------------------------------------------------

class _Trap:
    """Unpickling this runs ``open(marker, "w")``: the file appears only if the pickle was executed."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_code_inside_is_refused_without_running_it(tmp_path, ckpt):
    """A well-formed fdrl checkpoint under a neutral name (``model.pt``) with one entry holding a pickled object: the
    error names the refusal of pickled objects (not merely the file), and the object's code never runs."""
    from fdrl.checkpoint import read_checkpoint
    from fdrl.errors import CheckpointError

    marker = tmp_path / "marker"
    ck = torch.load(ckpt, weights_only=True)
    ck["notes"] = _Trap(marker)
    path = tmp_path / "model.pt"
    torch.save(ck, path)
    for load in (read_checkpoint, fdrl.load_checkpoint):
        try:
            load(path)
        except CheckpointError as exc:
            err = exc
        else:
            err = None
        assert not marker.exists(), f"{load.__name__} executed the checkpoint's pickled code"
        assert err is not None, f"{load.__name__} loaded a checkpoint holding a pickled object"
        msg = str(err).replace(str(path), "<file>")  # the refusal, not the file's name
        assert "refused" in msg and "pickled Python objects" in msg, msg
    del ck["notes"]
    torch.save(ck, path)
    assert fdrl.load_checkpoint(path).classes == ck["classes"]  # the same file without the object loads


# ---- 5. accuracy, class recall, mean class accuracy, macro F1 by hand ----------------------------------------------

def test_classification_metrics_by_hand():
    """Imbalanced classes, so that accuracy (6/10) and the mean class recall (2/3) differ. Confusion matrix (rows
    true, columns predicted; class d absent and never predicted):

        a: 4 2 0 0   support 6, recall 4/6     predicted a 4 (precision 4/4), b 3 (1/3), c 3 (1/3), d 0
        b: 0 1 2 0   support 3, recall 1/3     F1: a 2*1*(2/3)/(5/3) = 0.8, b 1/3, c 2*(1/3)*1/(4/3) = 0.5
        c: 0 0 1 0   support 1, recall 1/1     mean class accuracy over present classes (2/3 + 1/3 + 1)/3 = 2/3
        d: 0 0 0 0                             macro F1 over present classes (0.8 + 1/3 + 0.5)/3 = 49/90
    """
    from fdrl.engine.report import classification_metrics

    pairs = [(0, 0)] * 4 + [(0, 1)] * 2 + [(1, 1)] + [(1, 2)] * 2 + [(2, 2)]
    labels, preds = (np.array(v) for v in zip(*pairs, strict=True))
    m = classification_metrics(preds, labels, ["a", "b", "c", "d"])
    assert m["confusion_matrix"] == [[4, 2, 0, 0], [0, 1, 2, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert m["num_samples"] == 10
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["mean_class_accuracy"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx(49 / 90)
    hand = {"a": (1.0, 2 / 3, 0.8, 6), "b": (1 / 3, 1 / 3, 1 / 3, 3), "c": (1 / 3, 1.0, 0.5, 1), "d": (0, 0, 0, 0)}
    for c, (precision, recall, f1, support) in hand.items():
        got = m["per_class"][c]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((precision, recall, f1)), c
        assert got["support"] == support, c


# ---- 6. Wen's centre rule under DDP --------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batches(rank: int, steps: int = 2):
    """Rank ``rank``'s batches: different sizes and classes on each rank (rank 1 never sees class 0)."""
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for _ in range(steps):
        n = 5 + 2 * rank
        latent = torch.randn(n, 2, 4, generator=g) * 3 + rank
        alpha = torch.rand(n, 2, generator=g)
        labels = torch.randint(rank, 3, (n,), generator=g)
        out.append((latent, alpha, labels))
    return out


def _centre_worker(rank: int, world: int, port: int, q) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from fdrl.losses import FDRLCriterion

    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        crit = FDRLCriterion(num_classes=3, num_latent=2, latent_dim=4)  # default: centre_update="wen", rate 0.5
        for latent, alpha, labels in _batches(rank):
            crit.update_centres(latent, alpha, labels)
        # plain arrays: a tensor would travel as a shared-memory handle, gone once this process exits
        q.put((rank, crit.feature_centres.numpy().copy(), crit.alpha_centres.numpy().copy()))
    finally:
        dist.destroy_process_group()


def _wen_by_hand(steps, rate: float = 0.5):
    """c <- c - rate * sum_i (c - x_i) / (1 + n) per step, over all of the step's samples (per class for v)."""
    c = np.zeros((2, 4))
    v = np.zeros((3, 2))
    for latent, alpha, labels in steps:
        x, a, y = latent.double().numpy(), alpha.double().numpy(), labels.numpy()
        c = c - rate * (c[None] - x).sum(0) / (1 + len(x))
        for k in range(3):
            if (y == k).any():
                v[k] = v[k] - rate * (v[k][None] - a[y == k]).sum(0) / (1 + (y == k).sum())
    return c, v


def test_wen_centres_under_ddp_are_those_of_the_union_of_the_ranks_batches():
    """Two gloo processes feed different batches to ``update_centres`` (twice): both end with the same centres,
    equal to Wen's rule applied by hand to the union of each step's two batches."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_centre_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted((q.get(timeout=120) for _ in procs), key=lambda r: r[0])
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    (_, c0, v0), (_, c1, v1) = [(r, torch.from_numpy(c), torch.from_numpy(v)) for r, c, v in results]
    torch.testing.assert_close(c0, c1, rtol=0, atol=0)
    torch.testing.assert_close(v0, v1, rtol=0, atol=0)
    union = [tuple(torch.cat(parts) for parts in zip(a, b, strict=True))
             for a, b in zip(_batches(0), _batches(1), strict=True)]
    c, v = _wen_by_hand(union)
    np.testing.assert_allclose(c0.double().numpy(), c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v0.double().numpy(), v, rtol=1e-5, atol=1e-6)
    own, _ = _wen_by_hand(_batches(0))
    assert not np.allclose(c, own, atol=1e-3)  # rank 0's batches alone give other centres


# ---- 7. crop_face levels the eyes ----------------------------------------------------------------------------------

def _dark_centroid(pixels: np.ndarray) -> tuple[float, float]:
    """Centre of the dark pixels, in PIL's continuous coordinates (pixel i spans [i, i + 1))."""
    ys, xs = np.nonzero(pixels < 128)
    assert len(xs) > 10
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5


@pytest.mark.parametrize("tilt", [25.0, -18.0])
def test_crop_face_levels_the_eyes(tilt):
    """Two dark discs ("eyes") 32 px apart on a white 200 px image, their line tilted by ``tilt`` degrees (y down)
    about (100, 92); face box (70, 70, 60, 60), margin 0.2, so the crop is 84 px from (58, 58). Turning the image
    by ``tilt`` about the box centre (100, 100) sends the eyes' midpoint, 8 px above it, to
    (100 - 8 sin t, 100 - 8 cos t): in the crop the eyes lie on one row, 42 - 8 cos t, at x = 42 - 8 sin t -+ 16."""
    from fdrl.faces import Face, crop_face

    t = math.radians(tilt)
    eyes = ((100 - 16 * math.cos(t), 92 - 16 * math.sin(t)), (100 + 16 * math.cos(t), 92 + 16 * math.sin(t)))
    big = Image.new("L", (800, 800), 255)  # drawn at 4x and downsampled: sub-pixel disc centres
    d = ImageDraw.Draw(big)
    for ex, ey in eyes:
        d.ellipse([4 * ex - 16, 4 * ey - 16, 4 * ex + 16, 4 * ey + 16], fill=0)
    image = big.resize((200, 200), Image.BILINEAR).convert("RGB")
    crop = np.asarray(crop_face(image, Face(box=(70, 70, 60, 60), score=1.0, eyes=eyes), 0.2).convert("L"))
    assert crop.shape == (84, 84)
    (lx, ly), (rx, ry) = _dark_centroid(crop[:, :42]), _dark_centroid(crop[:, 42:])
    rx += 42
    assert abs(ly - ry) < 0.75, f"eyes not level in the crop: rows {ly:.2f} and {ry:.2f}"
    row, mid = 42 - 8 * math.cos(t), 42 - 8 * math.sin(t)
    assert (lx, ly, rx, ry) == pytest.approx((mid - 16, row, mid + 16, row), abs=1.0)
