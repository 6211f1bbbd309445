"""No run selects or is tuned on a test split: FER2013's PublicTest (also its Kaggle name ``val``) is the test
figure here, as is every data set's ``test``; val and test may not share samples; shipped recipes comply."""

from __future__ import annotations

import pytest

from fdrl.config import load_config
from fdrl.data.loading import load_splits
from fdrl.data.registry import is_test_split, refuse_test_split
from fdrl.errors import DataError, TrainingError
from fdrl.recipes import list_recipes


@pytest.mark.parametrize("dataset, split, expected", [
    ("fer2013", "val", True), ("fer2013", "publictest", True), ("fer2013", "PublicTest", True),
    ("fer2013", "test", True), ("fer2013", "privatetest", True), ("fer2013", "test/holdout", True),
    ("fer2013", "train/holdout", False), ("fer2013", "train", False),
    ("ferplus", "val", False), ("ferplus", "test", True),  # FER2013Valid is FERPlus's validation split
    ("rafdb", "test", True), ("rafdb", "val", False), ("sfew", "test", True),
    ("ckplus", "fold3/test", True), ("ckplus", "fold3/train/holdout", False), ("ckplus", "fold3/train", False),
])
def test_test_splits_are_named_per_data_set(dataset, split, expected):
    assert is_test_split(dataset, split) is expected


def test_refusal_names_the_split_and_the_way_out():
    with pytest.raises(DataError, match=r"'val' is a test split \(FER2013's 'val' is PublicTest.*train/holdout"):
        refuse_test_split("fer2013", "val", "select the checkpoint")
    refuse_test_split("fer2013", "train/holdout", "select the checkpoint")  # no error
    refuse_test_split("fer2013", None, "select the checkpoint")


@pytest.mark.parametrize("dataset, val", [("fer2013", "val"), ("fer2013", "publictest"), ("synthetic", "test")])
def test_training_refuses_a_test_split_as_val_before_reading_anything(tmp_path, dataset, val):
    cfg = load_config(None, [f"data.dataset={dataset}", f"data.root={tmp_path / 'absent'}", f"data.val_split={val}",
                             "data.cache=false"])
    with pytest.raises(DataError, match="is a test split"):
        load_splits(cfg)


def test_val_and_test_may_not_share_samples():
    cfg = load_config(None, ["data.dataset=synthetic", "data.options={train_size: 60, eval_size: 20, image_size: 32}",
                             "data.preprocessing.input_size=32", "data.cache=false", "data.train_split=train/fit",
                             "data.val_split=train/holdout", "data.test_split=train/holdout"])
    with pytest.raises(TrainingError, match="test split 'train/holdout' shares 7 samples with val"):
        load_splits(cfg)


@pytest.mark.parametrize("name", list_recipes())
def test_no_shipped_recipe_selects_on_a_test_split(name):
    d = load_config(name).data
    if d.val_split:
        assert not is_test_split(d.dataset, d.val_split), f"{name}: val_split {d.val_split!r} is a test split"


def test_splits_with_different_class_lists_are_refused_not_relabelled(tmp_path):
    """A folder tree's classes come from each split's own folders: test/ without b/ would put c at index 1."""
    from conftest import write_image

    for split, classes in (("train", "abc"), ("test", "ac")):
        for c in classes:
            for i in range(3):
                write_image(tmp_path / "d" / split / c / f"{i}.png", (32, 32), seed=i)
    base = ["data.dataset=folder", f"data.root={tmp_path / 'd'}", "data.val_fraction=0.34", "data.cache=false",
            "data.preprocessing.input_size=32", "data.test_split=test"]
    with pytest.raises(TrainingError, match=r"test split 'test' has classes \['a', 'c'\], train has \['a', 'b', 'c'\]"):
        load_splits(load_config(None, base))
    sets = load_splits(load_config(None, [*base, "data.options={classes: [a, b, c]}"]))
    assert sets["test"].classes == ["a", "b", "c"] and sorted(set(sets["test"].labels.tolist())) == [0, 2]
