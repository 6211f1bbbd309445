"""Loaders against tiny fixture trees in each publisher's exact layout, plus the real data when present."""

import csv

import numpy as np
import pytest
import torch

from conftest import shared, write_image
from fdrl.data import create_dataset, list_datasets
from fdrl.data.cachefile import SUFFIX
from fdrl.data.preprocess import BatchTransform, tta_views
from fdrl.data.splits import grouped_holdout, stratified_holdout
from fdrl.data.tensors import decode_dataset
from fdrl.errors import DataError


def test_registry_lists_every_benchmark():
    assert set(list_datasets()) == {"rafdb", "fer2013", "ferplus", "affectnet", "sfew", "ckplus", "mmi",
                                    "oulu_casia", "folder", "synthetic"}
    with pytest.raises(DataError, match="did you mean"):
        create_dataset("rafbd", "/x", "train")


# ---- RAF-DB -----------------------------------------------------------------------------------------------
def _rafdb(root, missing=False):
    lines = ["train_00001.jpg 1", "train_00002.jpg 4", "train_00003.jpg 7", "test_0001.jpg 5", "test_0002.jpg 6"]
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for i, line in enumerate(lines):
        stem = line.split()[0][:-4]
        if missing and stem == "train_00002":
            continue
        write_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", (100, 100), i)
        write_image(root / "Image" / "original" / f"{stem}.jpg", (300, 240), i)
    return root


def test_rafdb_labels_splits_and_variants(tmp_path):
    root = _rafdb(tmp_path / "raf")
    tr = create_dataset("rafdb", str(root), "train")
    assert tr.classes == ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    assert [s.id for s in tr.samples] == ["train_00001", "train_00002", "train_00003"]
    assert tr.labels == [0, 3, 6]
    te = create_dataset("rafdb", str(root), "test", variant="original")
    assert te.labels == [4, 5] and te[0][0].size == (300, 240)
    assert tr[0][0].size == (100, 100) and tr[0][2] == "train_00001"


def test_rafdb_missing_image_is_counted_or_strict(tmp_path):
    root = _rafdb(tmp_path / "raf", missing=True)
    ds = create_dataset("rafdb", str(root), "train")
    assert len(ds) == 2 and len(ds.skipped) == 1 and "listed but absent" in ds.skipped[0][1]
    with pytest.raises(DataError, match="train_00002_aligned.jpg: listed but absent"):
        create_dataset("rafdb", str(root), "train", on_error="strict")
    with pytest.raises(DataError, match="expected a folder"):
        create_dataset("rafdb", str(tmp_path / "nope"), "train")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 9\n")
    with pytest.raises(DataError, match="label 1-7"):
        create_dataset("rafdb", str(root), "train", on_error="strict")


# ---- FER2013 ----------------------------------------------------------------------------------------------
def test_fer2013_csv(tmp_path):
    rows = [(3, "Training"), (0, "Training"), (6, "PublicTest"), (5, "PrivateTest"), (1, "Training")]
    with (tmp_path / "fer2013.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for i, (e, u) in enumerate(rows):
            w.writerow([e, " ".join(str((i * 7 + k) % 256) for k in range(2304)), u])
        w.writerow([9, " ".join(["0"] * 2304), "Training"])  # label out of range: counted
    tr = create_dataset("fer2013", str(tmp_path), "train")
    assert tr.labels == [3, 0, 1] and len(tr.skipped) == 1
    assert tr.classes == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert create_dataset("fer2013", str(tmp_path), "val").labels == [6]
    assert create_dataset("fer2013", str(tmp_path), "test").labels == [5]
    im = tr[0][0]
    assert im.size == (48, 48) and im.mode == "RGB"


def test_fer2013_folder_release_with_public_test_only(tmp_path):
    for cls, n in (("angry", 3), ("happy", 4)):
        for i in range(n):
            write_image(tmp_path / "train" / cls / f"Training_{cls}{i}.jpg", seed=i)
        write_image(tmp_path / "test" / cls / f"PublicTest_{cls}.jpg")
    tr = create_dataset("fer2013", str(tmp_path), "train")
    assert tr.class_counts()["angry"] == 3 and tr.class_counts()["happy"] == 4 and tr.labels[0] == 0
    assert len(create_dataset("fer2013", str(tmp_path), "publictest")) == 2
    with pytest.raises(DataError, match="no PrivateTest images.*PublicTest: 2"):
        create_dataset("fer2013", str(tmp_path), "test")


# ---- FERPlus ----------------------------------------------------------------------------------------------
def test_ferplus_majority_and_distribution(tmp_path):
    d = tmp_path / "FER2013Train"
    votes = [[4, 0, 0, 1, 3, 2, 0, 0, 0, 0], [0, 5, 5, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 8, 2],
             [0, 0, 0, 0, 0, 0, 1, 9, 0, 0]]
    d.mkdir()
    with (d / "label.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        for i, v in enumerate(votes):
            write_image(d / f"fer{i:07d}.png", seed=i, mode="L")
            w.writerow([f"fer{i:07d}.png", "(0, 0, 48, 48)", *v])
    maj = create_dataset("ferplus", str(tmp_path), "train")
    assert maj.classes[7] == "contempt" and maj.labels == [0, 7]
    assert maj.excluded == {"tied majority": 1, "majority unknown": 1}
    dist = create_dataset("ferplus", str(tmp_path), "train", label_mode="distribution")
    soft = dist.target(0, soft=True)
    assert soft.sum() == pytest.approx(1.0) and soft[0] == pytest.approx(0.4)


# ---- AffectNet --------------------------------------------------------------------------------------------
def test_affectnet_csv_crops_box_and_class_variants(tmp_path):
    img_dir = tmp_path / "Manually_Annotated_Images" / "1"
    rows = [("1/a.jpg", 1), ("1/b.jpg", 7), ("1/c.jpg", 9)]
    for i, (rel, _) in enumerate(rows):
        write_image(tmp_path / "Manually_Annotated_Images" / rel, (200, 160), i)
    assert img_dir.is_dir()
    header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
              "expression", "valence", "arousal"]
    for name in ("training.csv", "validation.csv"):
        with (tmp_path / name).open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for rel, e in rows:
                w.writerow([rel, 10, 20, 64, 80, "1;2", e, 0.1, 0.2])
    seven = create_dataset("affectnet", str(tmp_path), "train")
    assert seven.labels == [1] and seven.excluded == {"expression 7": 1, "expression 9": 1}
    assert seven[0][0].size == (64, 80)
    eight = create_dataset("affectnet", str(tmp_path), "test", num_classes=8)
    assert eight.labels == [1, 7] and eight.classes[-1] == "contempt"


def test_affectnet_npy_layout(tmp_path):
    for split in ("train_set", "val_set"):
        for i, e in enumerate((0, 6, 10)):
            write_image(tmp_path / split / "images" / f"{i}.jpg", seed=i)
            (tmp_path / split / "annotations").mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / split / "annotations" / f"{i}_exp.npy", np.array(str(e)))
    ds = create_dataset("affectnet", str(tmp_path), "train")
    assert ds.labels == [0, 6]


# ---- SFEW / folder ----------------------------------------------------------------------------------------
def test_sfew_val_is_test_split(tmp_path):
    for split, n in (("Train", 2), ("Val", 1)):
        for cls in ("Angry", "Happy", "Surprise"):
            for i in range(n):
                write_image(tmp_path / split / cls / f"{cls}_{i}.png", seed=i)
    tr, te = create_dataset("sfew", str(tmp_path), "train"), create_dataset("sfew", str(tmp_path), "test")
    assert len(tr) == 6 and len(te) == 3 and te.labels == [0, 3, 6]


def test_folder_with_and_without_splits_and_empty_class(tmp_path):
    for cls in ("a", "b"):
        write_image(tmp_path / "flat" / cls / "1.jpg")
        write_image(tmp_path / "split" / "train" / cls / "1.png")
    (tmp_path / "flat" / "c").mkdir()
    flat = create_dataset("folder", str(tmp_path / "flat"), "train")
    assert flat.classes == ["a", "b", "c"] and len(flat) == 2 and "empty class" in flat.skipped[0][1]
    with pytest.raises(DataError, match="empty class folder"):
        create_dataset("folder", str(tmp_path / "flat"), "train", on_error="strict")
    assert len(create_dataset("folder", str(tmp_path / "split"), "train")) == 2
    # "val" is carved from train unless the tree has its own val/ folder
    for cls in ("a", "b"):
        write_image(tmp_path / "split" / "train" / cls / "2.png")
    assert len(create_dataset("folder", str(tmp_path / "split"), "val", val_fraction=0.5)) == 2  # train/holdout
    for cls in ("a", "b"):
        write_image(tmp_path / "split" / "val" / cls / "1.png")
    val = create_dataset("folder", str(tmp_path / "split"), "val")
    assert val.split == "val" and sorted(s.id for s in val.samples) == ["val/a/1.png", "val/b/1.png"]


# ---- sequences and subject-independent folds --------------------------------------------------------------
def _ckplus(root, subjects=12):
    for s in range(subjects):
        for q, code in ((1, 1 + s % 7), (2, 5)):
            seq = root / "cohn-kanade-images" / f"S{s:03d}" / f"{q:03d}"
            for f in range(1, 6):
                write_image(seq / f"S{s:03d}_{q:03d}_{f:08d}.png", seed=f)
            emo = root / "Emotion" / f"S{s:03d}" / f"{q:03d}"
            emo.mkdir(parents=True)
            (emo / f"S{s:03d}_{q:03d}_00000005_emotion.txt").write_text(f"   {code:.7e}\n")
    return root


def test_ckplus_last_three_frames_and_folds(tmp_path):
    root = _ckplus(tmp_path / "ck")
    ds = create_dataset("ckplus", str(root), "all")
    frames = sorted({s.id.rsplit("_", 1)[-1] for s in ds.samples})
    assert frames == ["00000003.png", "00000004.png", "00000005.png"]
    contempt = sum(1 for s in range(12) if 1 + s % 7 == 2)
    assert len(ds) == 3 * (24 - contempt) and ds.excluded == {"label outside the class set": contempt}
    neutral = create_dataset("ckplus", str(root), "all", classes="7_neutral")
    assert neutral.labels.count(6) == 24 - contempt
    covered = []
    for k in range(4):
        tr = create_dataset("ckplus", str(root), f"fold{k}/train", num_folds=4)
        te = create_dataset("ckplus", str(root), f"fold{k}/test", num_folds=4)
        assert not {s.subject for s in tr.samples} & {s.subject for s in te.samples}
        assert len(tr) + len(te) == len(ds)
        covered += [s.id for s in te.samples]
    assert sorted(covered) == sorted(s.id for s in ds.samples)
    fit = create_dataset("ckplus", str(root), "fold0/train/fit", num_folds=4)
    hold = create_dataset("ckplus", str(root), "fold0/train/holdout", num_folds=4)
    assert not {s.id for s in fit.samples} & {s.id for s in hold.samples}



@pytest.mark.parametrize("dataset", ["ckplus", "mmi"])
def test_holdout_inside_a_fold_is_subject_independent(tmp_path, dataset):
    """A sequence's frames are near-identical: fold<k>/train/holdout carves whole subjects from fit."""
    if dataset == "ckplus":
        root, folds = _ckplus(tmp_path / "ck"), 4
    else:
        root, folds = tmp_path / "MMI", 2
        for s in range(6):
            for q in range(2):
                _mmi_session(root, f"{s}{q}", f"S{s:03d}-{q:03d}", 1 + (2 * s + q) % 6, frames=7)
    for k in range(folds):
        parts = [create_dataset(dataset, str(root), f"fold{k}/train/{p}", num_folds=folds, val_fraction=0.2)
                 for p in ("fit", "holdout")]
        fit, hold = ({s.subject for s in ds.samples} for ds in parts)
        assert hold and not fit & hold
        share = len(parts[1]) / (len(parts[0]) + len(parts[1]))
        assert 0.1 <= share <= 0.35, share  # about val_fraction, as whole subjects allow
    again = create_dataset(dataset, str(root), f"fold{k}/train/holdout", num_folds=folds, val_fraction=0.2)
    assert [s.id for s in again.samples] == [s.id for s in parts[1].samples]  # seeded


def test_grouped_holdout_keeps_groups_whole_and_is_seeded():
    labels = [i % 3 for i in range(60)]
    groups = [f"s{i // 4}" for i in range(56)] + [None] * 4  # samples without a subject: groups of their own
    fit, hold = stratified_holdout(labels, 0.2, seed=1, groups=groups)
    assert (fit, hold) == grouped_holdout(labels, groups, 0.2, seed=1)
    assert sorted(fit + hold) == list(range(60)) and 9 <= len(hold) <= 15
    assert not {groups[i] for i in fit if groups[i]} & {groups[i] for i in hold if groups[i]}
    assert stratified_holdout(labels, 0.2, seed=1, groups=[None] * 60) == stratified_holdout(labels, 0.2, seed=1)
    assert grouped_holdout([0, 1, 0, 1], ["a", "a", "b", "b"], 0.1) in (([0, 1], [2, 3]), ([2, 3], [0, 1]))

def test_ck48_oulu_mmi_layouts(tmp_path):
    for cls in ("anger", "happy", "contempt"):
        for s in range(3):
            write_image(tmp_path / "ck48" / cls / f"S{s:03d}_001_0000001{s}.png", seed=s)
    ck48 = create_dataset("ckplus", str(tmp_path / "ck48"), "all")
    assert sorted(set(ck48.labels)) == [0, 3] and {s.subject for s in ck48.samples} == {"S000", "S001", "S002"}
    for p in ("P001", "P002"):
        for emo in ("Anger", "Happiness"):
            for f in range(5):
                write_image(tmp_path / "oulu" / "OriginalImg" / "VL" / "Strong" / p / emo / f"{f:03d}.jpeg")
                write_image(tmp_path / "mmi" / p / emo / "seq1" / f"{f:03d}.png")
    oulu = create_dataset("oulu_casia", str(tmp_path / "oulu"), "all")
    assert len(oulu) == 12 and oulu.samples[0].id.endswith("002.jpeg") and set(oulu.labels) == {0, 3}
    mmi = create_dataset("mmi", str(tmp_path / "mmi"), "all")
    assert len(mmi) == 12 and mmi.samples[0].subject == "P001"


# ---- MMI as the web database distributes it: Sessions/<id>/Sxxx-yyy.avi + Sxxx-yyy.xml -----------------------
def _mmi_video(path, frames):
    """A tiny AVI whose frame i is uniformly 20*i grey, so a test can tell which frames were read."""
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
    for i in range(frames):
        w.write(np.full((24, 32, 3), 20 * i, dtype=np.uint8))
    w.release()


def _mmi_session(root, session, name, emotion, frames=10, xml=None):
    d = root / "Sessions" / str(session)
    d.mkdir(parents=True)
    _mmi_video(d / f"{name}.avi", frames)
    tags = [f'<Metatag Name="Subject" Value="{name[1:4]}"/>']
    if emotion is not None:
        tags.append(f'<Metatag Name="Emotion" Value="{emotion}"/>')
    body = xml if xml is not None else ('<?xml version="1.0" encoding="utf-8"?>\n<Session>' + "".join(tags)
                                        + "</Session>")
    (d / f"{name}.xml").write_text(body)
    return d


def _mmi_tree(root):
    _mmi_session(root, 101, "S001-001", 4)  # happiness, 10 frames
    _mmi_session(root, 102, "S001-002", 1, frames=9)  # anger
    _mmi_session(root, 201, "S002-001", 6)  # surprise
    _mmi_session(root, 202, "S002-002", 2)  # disgust
    _mmi_session(root, 203, "S002-003", None)  # AU-only session: excluded, not an error
    _mmi_session(root, 301, "S003-001", 7)  # not one of the six basic emotions: excluded
    _mmi_session(root, 302, "S003-002", 3, frames=2)  # too short: skipped
    _mmi_session(root, 303, "S003-003", 5, xml="<Session><Metatag Name=")  # malformed: skipped
    _mmi_session(root, 304, "S003-004", "x")  # not a code: skipped
    (_mmi_session(root, 305, "S003-005", 5) / "S003-005.xml").unlink()  # no metadata: skipped
    still = root / "Sessions" / "900"
    write_image(still / "S001-900.jpg")
    (still / "S001-900.xml").write_text('<Session><Metatag Name="Emotion" Value="4"/></Session>')
    return root


def test_mmi_sessions_labels_middle_frames_and_exclusions(tmp_path):
    mmi = create_dataset("mmi", str(_mmi_tree(tmp_path / "MMI")), "all")
    assert len(mmi) == 4 * 3
    by_video = {}
    for i, s in enumerate(mmi.samples):
        by_video.setdefault(s.id.split("#")[0], []).append((s.frame, mmi.classes[s.label], s.subject, i))
    assert sorted(by_video) == ["101/S001-001.avi", "102/S001-002.avi", "201/S002-001.avi", "202/S002-002.avi"]
    assert [(f, c, subj) for f, c, subj, _ in by_video["101/S001-001.avi"]] == [
        (4, "happiness", "S001"), (5, "happiness", "S001"), (6, "happiness", "S001")]
    assert [f for f, *_ in by_video["102/S001-002.avi"]] == [3, 4, 5]  # 9 frames: the middle three
    assert by_video["201/S002-001.avi"][0][1] == "surprise" and by_video["202/S002-002.avi"][0][1] == "disgust"
    for frame, _, _, i in by_video["101/S001-001.avi"]:  # the decoded pixels are those frames (MJPG is lossy)
        assert abs(np.asarray(mmi.load(i)).mean() - 20 * frame) < 4
    assert mmi.excluded == {"no Emotion metatag (AU-only session)": 1,
                            "emotion code outside the six basic (1-6)": 1, "still-image session (no video)": 1}
    reasons = " ".join(r for _, r in mmi.skipped)
    assert len(mmi.skipped) == 4 and "2 frames, need 3" in reasons and "S003-003.xml: malformed XML" in reasons
    assert "Emotion value 'x' is not an integer" in reasons and "no session metadata S003-005.xml" in reasons
    last = create_dataset("mmi", str(tmp_path / "MMI"), "all", peak="last")
    assert [s.frame for s in last.samples[:3]] == [7, 8, 9]
    with pytest.raises(DataError, match="S003-002.avi: 2 frames, need 3"):
        create_dataset("mmi", str(tmp_path / "MMI"), "all", on_error="strict")


def test_mmi_sessions_folds_are_subject_independent_and_cached(tmp_path):
    root = str(_mmi_tree(tmp_path / "MMI"))
    train = create_dataset("mmi", root, "fold0/train", num_folds=2)
    test = create_dataset("mmi", root, "fold0/test", num_folds=2)
    assert len(train) + len(test) == 12 and not {s.subject for s in train.samples} & {s.subject for s in test.samples}
    cache = tmp_path / "cache"
    first = decode_dataset(train, 24, grayscale=True, cache_dir=str(cache))
    again = decode_dataset(train, 24, grayscale=True, cache_dir=str(cache))
    assert len(list(cache.iterdir())) == 1 and torch.equal(first.images, again.images)


def test_mmi_data_check_cli_reports_exclusions(tmp_path, capsys):
    from fdrl.cli import main

    code = main(["data", "check", "--dataset", "mmi", "--root", str(_mmi_tree(tmp_path / "MMI"))])
    out = capsys.readouterr().out
    assert code == 1 and "mmi/all: 12 usable images" in out and "still-image session" in out
    assert "skipped 4" in out


# ---- synthetic, splits, decoding ----------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_balanced():
    a = create_dataset("synthetic", None, "train", num_samples=14)
    b = create_dataset("synthetic", None, "train", num_samples=14)
    c = create_dataset("synthetic", None, "test", num_samples=14)
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(a.samples, b.samples, strict=True))
    assert not np.array_equal(a.samples[0].pixels, c.samples[0].pixels)
    assert a.class_counts() == {k: 2 for k in a.classes}


def test_stratified_holdout_is_seeded_disjoint_and_stratified():
    labels = [0] * 50 + [1] * 30 + [2] * 3 + [3]
    fit, hold = stratified_holdout(labels, 0.1, seed=0)
    assert stratified_holdout(labels, 0.1, seed=0) == (fit, hold)
    assert not set(fit) & set(hold) and sorted(fit + hold) == list(range(len(labels)))
    assert [sum(labels[i] == c for i in hold) for c in range(4)] == [5, 3, 1, 0]
    val = create_dataset("synthetic", None, "train/holdout", num_samples=70)
    assert len(val) == 7


def test_bad_images_are_counted_or_strict(tmp_path):
    write_image(tmp_path / "a" / "ok.jpg")
    (tmp_path / "a" / "zero.jpg").write_bytes(b"")
    (tmp_path / "a" / "text.jpg").write_text("not an image")
    good = write_image(tmp_path / "b" / "good.jpg", (64, 64))
    (tmp_path / "b" / "trunc.jpg").write_bytes(good.read_bytes()[:200])
    ds = create_dataset("folder", str(tmp_path), "all")
    assert len(ds.skipped) == 1  # zero-byte found while listing
    data = decode_dataset(ds, 48, False)
    assert len(data) == 2 and len(data.skipped) == 3
    reasons = " ".join(r for _, r in data.skipped)
    assert "zero-byte" in reasons and "not a readable image" in reasons
    ds.on_error = "strict"
    with pytest.raises(DataError, match="text.jpg|trunc.jpg"):
        decode_dataset(ds, 48, False)


def test_high_bit_depth_images_keep_their_brightness(tmp_path):
    """16-bit images were stretched by their own maximum (a dark 16-bit photo came out bright, unlike the same
    photo at 8 bits) and a 0-1 float TIFF decoded black. Each is read at its format's full scale now, through the
    same reader the data sets and `fdrl predict` use."""
    from PIL import Image

    from fdrl.media import read_image

    eight = np.tile(np.linspace(0, 100, 64), (64, 1))  # a dark photo: nothing above 100 of 255
    cases = {"dark16.png": (np.rint(eight * 257).astype(np.uint16), None),
             "dark16.tif": (np.rint(eight * 257).astype(np.uint16), None),
             "unit_float.tif": ((eight / 255).astype(np.float32), None),
             "byte_float.tif": (eight.astype(np.float32), None),
             "nan_float.tif": ((eight / 255).astype(np.float32), (0, 0))}
    for name, (arr, nan_at) in cases.items():
        if nan_at is not None:
            arr[nan_at] = np.nan
        Image.fromarray(arr).save(tmp_path / name)
        got = np.asarray(read_image(tmp_path / name).convert("L"), dtype=np.float64)
        want = np.rint(eight)
        if nan_at is not None:
            want[nan_at] = 0
        assert got.shape == (64, 64) and np.abs(got - want).max() <= 1, (name, got.max())
    bright = np.full((8, 8), 65535, np.uint16)
    Image.fromarray(bright).save(tmp_path / "white16.png")
    assert np.asarray(read_image(tmp_path / "white16.png").convert("L")).min() == 255


def test_a_lenient_runs_cache_does_not_make_a_strict_run_lenient(tmp_path):
    """on_error is not part of the cache key (the decoded pixels are the same), so a strict run that finds the
    cache of an on_error=skip run must still refuse the images that run skipped, not train without them."""
    root = tmp_path / "faces"
    write_image(root / "happy" / "ok.jpg", (64, 64))
    write_image(root / "sad" / "ok2.jpg", (64, 64))
    (root / "sad" / "text.jpg").write_text("not an image")
    lenient = create_dataset("folder", str(root), "all")
    logged: list[str] = []
    first = decode_dataset(lenient, 32, True, cache_dir=str(tmp_path / "cache"), log=logged.append)
    assert len(first) == 2 and len(list((tmp_path / "cache").glob(f"*{SUFFIX}"))) == 1
    again: list[str] = []
    second = decode_dataset(lenient, 32, True, cache_dir=str(tmp_path / "cache"), log=again.append)
    assert second.skipped == first.skipped and again == logged and "skipped 1 unreadable" in again[0]
    strict = create_dataset("folder", str(root), "all", on_error="strict")
    with pytest.raises(DataError, match="text.jpg"):
        decode_dataset(strict, 32, True, cache_dir=str(tmp_path / "cache"))


def test_cache_round_trip(tmp_path):
    ds = create_dataset("synthetic", None, "val", num_samples=21)
    a = decode_dataset(ds, 40, True, cache_dir=str(tmp_path))
    files = list(tmp_path.glob(f"synthetic-val-40g-*{SUFFIX}"))
    assert len(files) == 1 and a.images.shape == (21, 1, 40, 40) and a.images.dtype == torch.uint8
    b = decode_dataset(ds, 40, True, cache_dir=str(tmp_path))
    assert torch.equal(a.images, b.images) and a.ids == b.ids


def test_batch_transform_and_tta():
    x = torch.randint(0, 255, (4, 1, 48, 48), dtype=torch.uint8)
    t = BatchTransform((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "fer")
    plain = t(x)
    assert plain.shape == (4, 3, 48, 48)
    torch.testing.assert_close(plain[:, 0], (x[:, 0].float() / 255 - 0.5) / 0.25)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, b = t(x, train=True, generator=g1), t(x, train=True, generator=g2)
    assert torch.equal(a, b) and not torch.allclose(a, plain)
    assert len(tta_views(plain, "tencrop")) == 10 and tta_views(plain, "flip")[1].shape == plain.shape


# ---- the real data (development machines only) -------------------------------------------------------------
@pytest.mark.data
def test_real_fer2013_published_counts():
    root = shared("fer2013")
    tr = create_dataset("fer2013", str(root), "train")
    assert tr.class_counts() == {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830,
                                 "surprise": 3171, "neutral": 4965}
    assert len(create_dataset("fer2013", str(root), "publictest")) == 3589


@pytest.mark.data
def test_real_ferplus_folders():
    root = shared("ferplus")
    tr, va = create_dataset("ferplus", str(root), "train"), create_dataset("ferplus", str(root), "val")
    assert len(tr) > 25000 and len(va) > 3000 and sum(tr.excluded.values()) > 0
    assert tr.classes == ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    assert tr.class_counts()["neutral"] > tr.class_counts()["contempt"] > 0
    assert tr[0][0].size == (48, 48)


def test_missing_label_file_and_duplicate_ids(tmp_path):
    root = _rafdb(tmp_path / "raf")
    (root / "EmoLabel" / "list_patition_label.txt").unlink()
    with pytest.raises(DataError, match="rafdb label file: expected the file"):
        create_dataset("rafdb", str(root), "train")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 1\ntrain_00001.jpg 2\n")
    with pytest.raises(DataError, match="duplicated sample ids"):
        create_dataset("rafdb", str(root), "train")


def test_data_check_with_missing_root_fails(tmp_path, capsys):
    from fdrl.cli import main

    code = main(["data", "check", "--dataset", "fer2013", "--root", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code != 0, "a data check that could read nothing must not exit 0"
    assert "fer2013/train: unavailable" in err and "nowhere" in err
    assert "3 of 3 split(s) of fer2013 could not be read (train, val, test); check --root" in err


def test_augment_names_are_one_list():
    """The config's choices of data.augment are exactly the presets BatchTransform knows."""
    import typing

    from fdrl.config import DataConfig
    from fdrl.data.preprocess import AUGMENT_PRESETS

    assert set(typing.get_args(typing.get_type_hints(DataConfig)["augment"])) == set(AUGMENT_PRESETS)


def test_photo_augmentation_blurs_and_is_reproducible():
    """The photo preset's blur smooths each face by its own sigma, and its draws are a function of the generator
    (so --resume repeats them exactly)."""
    from fdrl.data.preprocess import BatchTransform, _gaussian_blur

    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 48)
    y = _gaussian_blur(x, torch.tensor([0.3, 1.5]))
    assert y.shape == x.shape
    rough = [float((t[..., 1:] - t[..., :-1]).abs().mean()) for t in (x[1], y[0], y[1])]
    assert rough[0] > rough[1] > rough[2]  # more blur, less pixel-to-pixel change
    flat = torch.full((1, 1, 16, 16), 0.5)
    assert torch.allclose(_gaussian_blur(flat, torch.tensor([1.0])), flat, atol=1e-6)  # a blur keeps the mean
    t = BatchTransform((0.5,) * 3, (0.25,) * 3, "photo")
    faces = torch.randint(0, 255, (16, 1, 48, 48), dtype=torch.uint8)
    a = t(faces, train=True, generator=torch.Generator().manual_seed(3))
    b = t(faces, train=True, generator=torch.Generator().manual_seed(3))
    c = t(faces, train=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.isfinite(a).all()
    assert torch.equal(t(faces), BatchTransform((0.5,) * 3, (0.25,) * 3, "none")(faces))  # evaluation: no draws
