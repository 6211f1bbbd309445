"""Distilling an ensemble: the teachers' probabilities on the training split computed once (``fdrl teach``), and
a student trained on their blend with the labels (``data.teacher_targets``, ``loss.distill_weight``)."""

import hashlib
import json
import shlex
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fdrl
from fdrl.checkpoint import atomic_save, make_checkpoint
from fdrl.cli import build_parser, main
from fdrl.cli.training import run_config
from fdrl.config import Preprocessing, load_config, to_dict
from fdrl.data.loading import load_splits
from fdrl.data.preprocess import BatchTransform
from fdrl.data.teachers import blend_teacher_targets, read_teacher_targets, save_teacher_targets
from fdrl.data.tensors import TensorSet
from fdrl.engine.distill import teach
from fdrl.engine.trainer import train
from fdrl.errors import ConfigError, DataError, TrainingError
from fdrl.shipped import shipped_file

RUN = [
    "data.dataset=synthetic",
    "data.options={train_size: 28, eval_size: 14, image_size: 32}",
    "data.preprocessing.input_size=32",
    "data.cache=false",
    "model.num_latent=3",
    "model.alpha_reduce=mean",
    "optim.lr=0.001",
    "train.batch_size=8",
    "train.epochs=1",
    "train.num_threads=1",
    "report.tsne=false",
    "report.plots=false",
]
QUIET = {"device": "cpu", "log": lambda m: None}


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Two tiny models trained one epoch each on the synthetic set (seeds 0 and 1)."""
    out = tmp_path_factory.mktemp("teachers")
    for seed in (0, 1):
        train(load_config(None, [*RUN, f"train.seed={seed}"]), out / f"s{seed}")
    return [str(out / "s0" / "best.pt"), str(out / "s1" / "best.pt")]


@pytest.fixture(scope="module")
def split():
    """The run's training split as training builds it."""
    return load_splits(load_config(None, RUN))["train"]


def _by_hand(paths, images, temperature: float, flip: bool = False) -> torch.Tensor:
    """The mean over teachers of softmax(logits / T), flip-averaged when asked."""
    total = 0
    for path in paths:
        loaded = fdrl.load_checkpoint(path)
        x = BatchTransform(loaded.preprocessing.mean, loaded.preprocessing.std)(images)
        with torch.no_grad():
            views = [x, x.flip(-1)] if flip else [x]
            total = total + sum(F.softmax(loaded.model(v).logits / temperature, -1) for v in views) / len(views)
    return total / len(paths)


def test_the_targets_are_the_teachers_mean_softmax_and_say_what_made_them(teachers, split, tmp_path):
    out = tmp_path / "targets.pt"
    s = teach(load_config(None, RUN), teachers, out, temperature=2.0, **QUIET)
    raw = torch.load(out, weights_only=True)  # plain tensors, strings and lists
    assert raw["format"] == "fdrl-teacher-targets" and raw["format_version"] == 1
    assert raw["ids"] == split.ids and raw["classes"] == split.classes and raw["probs"].dtype == torch.float32
    torch.testing.assert_close(raw["probs"], _by_hand(teachers, split.images, 2.0), rtol=0, atol=1e-5)
    assert raw["teacher_names"] == teachers and raw["teacher_sha256"] == [_sha(p) for p in teachers]
    assert (raw["temperature"], raw["tta"], raw["dataset"], raw["split"]) == (2.0, "none", "synthetic", "train")
    assert s["sha256"] == _sha(out) and s["num_samples"] == 28 == len(raw["probs"])
    # each teacher's accuracy on the training split, as its own predictions give it
    for row, path in zip(s["teachers"], teachers, strict=True):
        hand = (_by_hand([path], split.images, 2.0).argmax(1) == split.labels).float().mean()
        assert row["accuracy"] == pytest.approx(float(hand)) and row["images_per_second"] > 0


def test_flip_views_are_averaged_per_teacher(teachers, split, tmp_path):
    teach(load_config(None, RUN), teachers, tmp_path / "none.pt", **QUIET)
    teach(load_config(None, RUN), teachers, tmp_path / "flip.pt", tta="flip", **QUIET)
    plain, flip = (torch.load(tmp_path / f, weights_only=True)["probs"] for f in ("none.pt", "flip.pt"))
    torch.testing.assert_close(plain, _by_hand(teachers, split.images, 1.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(flip, _by_hand(teachers, split.images, 1.0, flip=True), rtol=0, atol=1e-5)
    assert (flip - plain).abs().max() > 1e-3


def test_a_teacher_sees_the_faces_through_its_own_preprocessing(ckpt, split, tmp_path):
    """The conftest checkpoint takes 40 px grey faces; the run decodes 32 px colour ones."""
    teach(load_config(None, RUN), [ckpt], tmp_path / "t.pt", **QUIET)
    loaded = fdrl.load_checkpoint(ckpt)
    grey = (split.images.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    grey = F.interpolate(grey.round(), size=(40, 40), mode="bilinear", align_corners=False).round().clamp(0, 255)
    x = BatchTransform(loaded.preprocessing.mean, loaded.preprocessing.std)(grey.to(torch.uint8))
    with torch.no_grad():
        hand = F.softmax(loaded.model(x).logits, -1)
    torch.testing.assert_close(torch.load(tmp_path / "t.pt", weights_only=True)["probs"], hand, rtol=0, atol=1e-5)


def _file(tmp_path, split, name="t.pt", drop=0, classes=None, seed=0):
    """A targets file for ``split``: its ids shuffled, one extra id, its classes reversed, random probabilities
    (returned in the run's order, by sample), less the first ``drop`` samples."""
    g = torch.Generator().manual_seed(seed)
    probs = F.softmax(torch.randn(len(split), len(split.classes), generator=g) * 3, -1)
    perm = torch.randperm(len(split), generator=g)[drop:]
    ids = [split.ids[i] for i in perm] + ["not/in/the/run.png"]
    stored = torch.cat([probs[perm], torch.full((1, len(split.classes)), 1 / len(split.classes))]).flip(1)
    path = tmp_path / name
    save_teacher_targets(path, ids, classes or split.classes[::-1], stored, teacher_names=["by hand"],
                         temperature=1.0, tta="none", dataset="synthetic", split="train")
    return path, probs


def test_the_student_trains_on_the_blend_found_by_id_and_class_name(split, tmp_path):
    path, probs = _file(tmp_path, split)
    whole = load_splits(load_config(None, [*RUN, f"data.teacher_targets={path}", "loss.distill_weight=1"]))["train"]
    assert torch.equal(whole.targets, probs)  # the teachers' probabilities, sample by sample, class by class
    assert torch.equal(whole.labels, split.labels) and whole.ids == split.ids  # the labels stay the data set's
    lines = []
    part = load_splits(load_config(None, [*RUN, f"data.teacher_targets={path}", "loss.distill_weight=0.25"]),
                       lines.append)["train"]
    torch.testing.assert_close(part.targets, 0.25 * probs + 0.75 * F.one_hot(split.labels, 7).float(), rtol=0,
                               atol=1e-7)
    assert any(line.startswith(f"data train: targets = 0.25 x teachers + 0.75 x labels, teachers from {path}")
               for line in lines)


@pytest.fixture
def write_targets(tmp_path):
    def write(ids, classes, probs):
        path = tmp_path / "votes.pt"
        save_teacher_targets(path, ids, classes, probs)
        return path
    return write


def test_soft_labels_are_blended_as_they_are(write_targets):
    votes = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]])
    run = TensorSet(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), votes, torch.tensor([0, 2]), ["a", "b"],
                    ["happy", "sad", "neutral"], [])
    targets = read_teacher_targets(write_targets(["b", "a"], ["Neutral", "Sad", "Happy"],
                                                 torch.tensor([[0.1, 0.2, 0.7], [1.0, 0.0, 0.0]])))
    got = blend_teacher_targets(run, targets, 0.5)
    teacher = torch.tensor([[0.0, 0.0, 1.0], [0.7, 0.2, 0.1]])  # by id, the columns by name
    torch.testing.assert_close(got.targets, 0.5 * teacher + 0.5 * votes, rtol=0, atol=1e-7)


def test_a_missing_id_a_class_mismatch_and_a_foreign_file_are_refused_naming_the_file(split, tmp_path):
    def load(path):
        return load_splits(load_config(None, [*RUN, f"data.teacher_targets={path}"]))

    path, _ = _file(tmp_path, split, "short.pt", drop=1)
    missing = next(i for i in split.ids if i not in read_teacher_targets(path).ids)
    with pytest.raises(DataError, match=rf"^data\.teacher_targets: {path} has no targets for 1 of the 28 training "
                                        rf"samples \(e\.g\. '{missing}'\)"):
        load(path)
    classes = ["angry", "disgust", "fear", "happy", "sad", "surprise", "contempt"]
    path, _ = _file(tmp_path, split, "classes.pt", classes=classes)
    with pytest.raises(DataError, match=rf"^data\.teacher_targets: {path} holds classes .*'contempt'"):
        load(path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "fdrl-checkpoint", "format_version": 1}, foreign)
    with pytest.raises(DataError, match=rf"^data\.teacher_targets: {foreign}: not a teacher-targets file "
                                        r"\(format 'fdrl-checkpoint'"):
        load(foreign)
    newer = tmp_path / "newer.pt"
    torch.save({**torch.load(path, weights_only=True), "format_version": 2}, newer)
    with pytest.raises(DataError, match=rf"^data\.teacher_targets: {newer}: format version 2"):
        load(newer)
    with pytest.raises(DataError, match=rf"^data\.teacher_targets: {tmp_path / 'absent.pt'} does not exist"):
        load(tmp_path / "absent.pt")


@pytest.mark.parametrize(("setting", "match"), [
    (["data.train_split=val"], r"^data\.train_split: 'val' is this run's validation split"),
    (["data.train_split=test"], r"^data\.train_split: 'test' is a test split of synthetic"),
])
def test_targets_are_refused_for_a_validation_or_test_split(ckpt, tmp_path, setting, match):
    with pytest.raises(DataError, match=match):
        teach(load_config(None, [*RUN, *setting]), [ckpt], tmp_path / "t.pt", **QUIET)
    assert not (tmp_path / "t.pt").exists()


def _random_teacher(tmp_path, classes, config=None):
    torch.manual_seed(0)
    model = fdrl.create_model("baseline_resnet18", num_classes=len(classes))
    path = tmp_path / "other.pt"
    atomic_save(make_checkpoint(model, classes, Preprocessing(input_size=32), config=config), path)
    return str(path)


def test_a_teacher_needs_the_runs_classes(tmp_path):
    other = _random_teacher(tmp_path, ["happy", "sad", "neutral"])
    with pytest.raises(ConfigError, match=rf"^teacher {other}: classes \['happy', 'sad', 'neutral'\], the run "
                                          r"trains \['angry'"):
        teach(load_config(None, RUN), [other], tmp_path / "t.pt", **QUIET)


def test_a_teacher_trained_on_the_runs_test_faces_is_refused_on_its_val_faces_warned(tmp_path):
    classes = list(load_splits(load_config(None, RUN))["train"].classes)
    on_test = _random_teacher(tmp_path, classes, to_dict(load_config(None, [*RUN, "data.train_split=test"])))
    with pytest.raises(TrainingError, match=rf"^teacher {on_test}: 14 of the 14 faces of test split 'test' trained"):
        teach(load_config(None, RUN), [on_test], tmp_path / "t.pt", **QUIET)
    on_val = _random_teacher(tmp_path, classes, to_dict(load_config(None, [*RUN, "data.train_split=val"])))
    lines = []
    teach(load_config(None, RUN), [on_val], tmp_path / "t.pt", device="cpu", log=lines.append)
    assert any(line.startswith(f"warning: teacher {on_val}: 14 of the 14 faces of val split 'val' trained it")
               for line in lines)


def test_a_student_run_records_its_targets_and_resume_refuses_other_ones(teachers, tmp_path):
    targets = tmp_path / "targets.pt"
    teach(load_config(None, RUN), teachers, targets, **QUIET)
    cfg = load_config(None, [*RUN, f"data.teacher_targets={targets}", "loss.distill_weight=0.7"])
    s = train(cfg, tmp_path / "student")
    assert s["teacher_targets_sha256"] == _sha(targets)
    assert json.loads((tmp_path / "student" / "summary.json").read_text())["teacher_targets_sha256"] == _sha(targets)
    assert s["config"]["data"]["teacher_targets"] == str(targets) and s["config"]["loss"]["distill_weight"] == 0.7
    ck = torch.load(tmp_path / "student" / "last.pt", weights_only=True)
    assert ck["teacher_targets_sha256"] == _sha(targets)
    teach(load_config(None, RUN), teachers[:1], targets, **QUIET)  # other targets under the same name
    more = load_config(None, [*RUN, f"data.teacher_targets={targets}", "loss.distill_weight=0.7", "train.epochs=2"])
    with pytest.raises(TrainingError, match=r"^--resume: .*last\.pt was trained on teacher targets with sha256"):
        train(more, tmp_path / "student", resume=True)


def test_distill_weight_is_checked():
    with pytest.raises(ConfigError, match=r"distill_weight must lie in \(0, 1\]"):
        load_config(None, [*RUN, "data.teacher_targets=t.pt", "loss.distill_weight=0"])
    with pytest.raises(ConfigError, match=r"loss\.distill_weight=0\.7 .* set data\.teacher_targets"):
        load_config(None, [*RUN, "loss.distill_weight=0.7"])


def test_the_teach_command_runs_end_to_end_with_a_shipped_teacher(teachers, split, tmp_path, capsys):
    if not shipped_file("fer2013").is_file():
        pytest.skip("the shipped fer2013 model is not in this installation")
    out = tmp_path / "targets.pt"
    argv = ["teach", "--checkpoint", teachers[0], "--checkpoint", "fer2013", "--tta", "flip", "--device", "cpu",
            "--out", str(out)]
    assert main([*argv, *(a for item in RUN for a in ("--set", item))]) == 0
    text = capsys.readouterr().out
    assert f"teacher {teachers[0]}: 28 faces in " in text and "img/s, tta flip); accuracy " in text
    assert "teacher fer2013: 28 faces in " in text and "teachers' mean: accuracy " in text
    t = read_teacher_targets(out)
    assert t.ids == split.ids and t.meta["teacher_names"] == [teachers[0], "fer2013"]
    assert t.meta["teacher_sha256"] == [_sha(teachers[0]), _sha(shipped_file("fer2013"))]
    assert t.meta["tta"] == "flip" and t.meta["temperature"] == 1.0
    torch.testing.assert_close(t.probs.sum(1), torch.ones(28))


def test_the_documented_commands_parse():
    page = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    section = page.split("## Distilling an ensemble into one model\n")[1].split("\n## ")[0]
    block = section.split("```bash\n")[1].split("```")[0].replace("\\\n", " ")
    teach_args, train_args = (build_parser().parse_args(shlex.split(line)[1:]) for line in block.splitlines())
    assert teach_args.func.__name__ == "teach_command" and teach_args.tta == "flip"
    assert teach_args.teachers == ["runs/s0/best.pt", "runs/s1/best.pt", "fer2013"]
    assert run_config(teach_args).data.root == "PATH"
    student = run_config(train_args)
    assert student.data.teacher_targets == teach_args.out == "runs/teachers.pt" and student.data.root == "PATH"
