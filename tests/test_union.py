"""Training on the union of labelled data sets (``data.extra_train``): classes matched by name, no leaks into
validation or test, one kind of target, cached parts read by rows, and the config recorded with the run."""

import json
import shlex

import pytest
import torch
import yaml

from fdrl.cli import build_parser
from fdrl.config import TrainConfig, dump_yaml, from_dict, load_config
from fdrl.data.loading import check_extra_train, load_splits, to_classes
from fdrl.data.registry import create_dataset
from fdrl.data.synthetic import CLASSES
from fdrl.data.tensors import ConcatRows, TensorSet, decode_dataset
from fdrl.engine.trainer import train
from fdrl.errors import ConfigError, DataError

SMALL = [
    "data.dataset=synthetic",
    "data.options={train_size: 21, eval_size: 14, image_size: 32}",
    "data.preprocessing.input_size=32",
    "data.cache=false",
]

# The command docs/training.md gives, parsed as a shell and the CLI parse it.
DOCS_COMMAND = ("fdrl train --recipe fer2013_dlib --set data.root=PATH "
                "--set 'data.extra_train=[{dataset: sfew, root: PATH2}]' --out RUN")


def _tree(root, counts: dict[str, int], write) -> str:
    """``root/<class>/<i>.png`` with ``counts[class]`` images each."""
    for name, n in counts.items():
        for i in range(n):
            write(root / name / f"{i}.png", seed=10 * len(name) + i)
    return str(root)


def _extra(root, split: str = "train", dataset: str = "folder") -> str:
    return f"data.extra_train=[{{dataset: {dataset}, root: '{root}', split: {split}}}]"


def test_classes_are_matched_by_name_and_a_missing_class_is_dropped_and_counted(tmp_path, img):
    root = _tree(tmp_path / "faces", {"Happy": 3, "Angry": 2, "Contempt": 1}, img)
    lines = []
    data = load_splits(load_config(None, [*SMALL, _extra(root)]), lines.append)
    train = data["train"]
    assert train.classes == list(CLASSES) and len(train) == 21 + 5
    # folder classes sort as Angry, Contempt, Happy; the run's are FER2013's: angry = 0, happy = 3
    assert train.labels[21:].tolist() == [0, 0, 3, 3, 3] and train.targets[21:].tolist() == [0, 0, 3, 3, 3]
    assert train.labels[:21].tolist() == [i % 7 for i in range(21)]
    assert train.ids[21:] == ["Angry/0.png", "Angry/1.png", "Happy/0.png", "Happy/1.png", "Happy/2.png"]
    assert ("data train+folder/train: 5 samples (angry 2, disgust 0, fear 0, happy 3, sad 0, surprise 0, neutral 0);"
            " dropped 1 (not in classes: Contempt 1), 0 (in val/test)") in lines
    assert "data train: 26 samples in 2 parts" in lines
    # all parts in memory: one tensor; the extra rows are the folder's own faces at the run's size
    assert train.reader is None and train.images.shape == (26, 3, 32, 32)
    alone = decode_dataset(create_dataset("folder", root, "train"), 32, False, log=lambda m: None)
    assert torch.equal(train.rows(torch.tensor([23, 21])), alone.images[[3, 0]])  # Happy/0, Angry/0


def test_an_extra_sample_sharing_an_id_with_val_is_dropped(tmp_path, img):
    primary = tmp_path / "primary"
    for split in ("train", "val", "test"):
        _tree(primary / split, {"Happy": 2, "Angry": 1}, img)
    _tree(tmp_path / "other" / "val", {"Happy": 3}, img)  # val/Happy/0.png and 1.png are the primary's val ids
    cfg = load_config(None, [*SMALL, "data.dataset=folder", f"data.root={primary}", "data.options={}",
                             _extra(tmp_path / "other", split="val")])
    lines = []
    data = load_splits(cfg, lines.append)
    assert len(data["train"]) == 3 + 1 and data["train"].ids[3:] == ["val/Happy/2.png"]
    assert ("data train+folder/val: 1 samples (Angry 0, Happy 1); dropped 0 (not in classes), 2 (in val/test)"
            in lines)


@pytest.mark.parametrize("entry, match", [
    ("{dataset: sfew, root: R, split: test}", r"data\.extra_train\[0\]\.split: 'test' is a test split of sfew"),
    ("{dataset: fer2013, root: R, split: val}", r"data\.extra_train\[0\]\.split: 'val' is a test split of fer2013"),
    ("{dataset: synthetic, split: val}", r"data\.extra_train\[0\]: synthetic/val overlaps this run's own "
                                         r"validation split 'val'"),
    ("{dataset: synthetic}", r"overlaps this run's own training split 'train'"),
], ids=["sfew-test", "fer2013-publictest", "own-val", "own-train"])
def test_a_test_split_or_the_runs_own_split_is_refused(entry, match):
    cfg = load_config(None, [*SMALL, f"data.extra_train=[{entry}]"])
    with pytest.raises(DataError, match=match):
        load_splits(cfg)  # refused before anything is decoded


@pytest.mark.parametrize("value, match", [
    ("[{dataset: sfew, root: R, splt: train}]", r"^data\.extra_train\[0\]\.splt: unknown key; did you mean 'split'"),
    ("[{root: R}]", r"^data\.extra_train\[0\]\.dataset: required"),
    ("[sfew]", r"^data\.extra_train\[0\]: expected a mapping"),
    ("[{dataset: sfew, root: R}, {dataset: sfew, root: R, options: [a]}]", r"^data\.extra_train\[1\]\.options: "),
    ("{dataset: sfew, root: R}", r"^data\.extra_train: expected a list"),
])
def test_a_malformed_entry_names_its_field(value, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [*SMALL, f"data.extra_train={value}"])


@pytest.mark.parametrize("entry, match", [
    ("{dataset: sfw, root: R}", r"^data\.extra_train\[0\]\.dataset: unknown dataset 'sfw'; did you mean sfew"),
    ("{dataset: sfew}", r"^data\.extra_train\[0\]\.root: required"),
])
def test_an_unknown_data_set_or_a_missing_root_names_its_field(entry, match):
    cfg = load_config(None, [*SMALL, f"data.extra_train=[{entry}]"])
    with pytest.raises(ConfigError, match=match):
        check_extra_train(cfg.data)


def test_a_cached_part_is_read_by_rows_not_loaded(tmp_path, img):
    root = _tree(tmp_path / "faces", {"Happy": 2, "Sad": 2}, img)
    cached = [*SMALL, "data.cache=true", f"data.cache_dir={tmp_path / 'cache'}", _extra(root)]
    union = load_splits(load_config(None, cached))["train"]
    assert union.images.device.type == "meta" and isinstance(union.reader, ConcatRows)  # a shape, no pixels
    assert len(union) == 25 and union.images.shape == (25, 3, 32, 32)
    assert len(list((tmp_path / "cache").glob("folder-train-32c-*.rows"))) == 1  # the part's own cache file
    eager = load_splits(load_config(None, [*SMALL, _extra(root)]))["train"]  # decoded in memory, joined by cat
    assert eager.reader is None and union.ids == eager.ids and torch.equal(union.labels, eager.labels)
    idx = torch.randperm(25, generator=torch.Generator().manual_seed(0))[:17]  # both parts, any order
    assert torch.equal(union.rows(idx), eager.images[idx])
    assert torch.equal(union.rows(torch.tensor([24, 0, 21, 20])), eager.images[[24, 0, 21, 20]])


def test_targets_become_one_kind_over_the_runs_classes():
    def part(targets):
        n = len(targets)
        labels = torch.tensor([0, 2][:n])
        return TensorSet(torch.zeros(n, 1, 32, 32, dtype=torch.uint8), targets, labels, ["a", "b"][:n],
                         ["Neutral", "happiness", "contempt"], [])

    run = ["happy", "neutral"]
    soft = part(torch.tensor([[0.5, 0.25, 0.25]]))  # votes: neutral, happiness, contempt
    got = to_classes(soft, run, soft=True)
    assert got.classes == run and got.labels.tolist() == [1]
    torch.testing.assert_close(got.targets, torch.tensor([[1 / 3, 2 / 3]]))  # contempt's mass dropped, renormalised
    hard = to_classes(part(torch.tensor([0])), run, soft=True)  # one-hot in a run of soft targets
    assert hard.targets.tolist() == [[0.0, 1.0]]
    assert to_classes(soft, run, soft=False).targets.tolist() == [1]  # a run of hard targets: the label
    with pytest.raises(DataError, match=r"contempt"):  # list_extra drops these before they get here
        to_classes(part(torch.tensor([0, 2])), run, soft=False)


def test_one_epoch_with_an_extra_part_trains_and_records_it(tmp_path, img):
    root = _tree(tmp_path / "faces", {"Happy": 4, "Surprise": 4}, img)
    cfg = load_config(None, [*SMALL, _extra(root), "model.num_latent=3", "model.alpha_reduce=mean",
                             "train.batch_size=8", "train.epochs=1", "train.num_threads=1", "report.tsne=false",
                             "report.plots=false"])
    s = train(cfg, tmp_path / "run")
    entry = {"dataset": "folder", "root": root, "split": "train", "options": {}}
    assert s["config"]["data"]["extra_train"] == [entry]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["config"]["data"]["extra_train"] == [entry]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["images_per_second"] > 0 and len(rows) == 1
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert from_dict(TrainConfig, ck["config"]) == cfg  # a checkpoint rebuilds the run's config, extras included


def test_the_config_round_trips_and_the_documented_command_parses():
    args = build_parser().parse_args(shlex.split(DOCS_COMMAND)[1:])
    cfg = load_config(args.recipe, args.overrides)
    assert cfg.data.root == "PATH" and cfg.data.dataset == "fer2013"
    assert cfg.data.extra_train == [{"dataset": "sfew", "root": "PATH2", "split": "train", "options": {}}]
    assert from_dict(TrainConfig, yaml.safe_load(dump_yaml(cfg))) == cfg
    assert from_dict(TrainConfig, {"data": {"dataset": "synthetic"}}).data.extra_train == []  # older configs


def test_the_data_check_lists_the_extra_parts(tmp_path, img):
    from fdrl.reproduce.suite import check_data

    root = _tree(tmp_path / "faces", {"Happy": 3, "Angry": 2, "Contempt": 1}, img)
    lines = []
    assert check_data(load_config(None, [*SMALL, _extra(root)]), "DATA", lines.append) == 21 + 5
    assert lines == ["data train+folder/train: 5 samples listed; dropped 1 (not in classes), 0 (in val/test)"]


def test_resume_with_a_cached_extra_part_matches_the_uninterrupted_run(tmp_path, img):
    from fdrl.errors import TrainingStopped

    root = _tree(tmp_path / "faces", {"Happy": 4, "Surprise": 4}, img)
    run = [*SMALL, "data.cache=true", f"data.cache_dir={tmp_path / 'cache'}", _extra(root), "model.num_latent=3",
           "model.alpha_reduce=mean", "train.batch_size=8", "train.epochs=2", "train.num_threads=1",
           "report.tsne=false", "report.plots=false"]
    full = train(load_config(None, run), tmp_path / "full")
    with pytest.raises(TrainingStopped):
        train(load_config(None, [*run, "train.stop_after_steps=4"]), tmp_path / "killed")  # 3 steps an epoch
    resumed = train(load_config(None, run), tmp_path / "killed", resume=True)
    assert resumed["final_weights_digest"] == full["final_weights_digest"]
