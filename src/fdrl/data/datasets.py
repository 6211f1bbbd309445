"""Loaders for the FER benchmarks, each reading its publisher's layout as distributed.

Every loader maps raw labels to class indices through an explicit table below (never a comment), and returns
the publisher's own splits; derived splits (``train/holdout``, ``fold3/train``) are made in
:mod:`fdrl.data.registry`.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import FERDataset, Sample, SampleCollector, image_files, require_dir, require_file

# ---------------------------------------------------------------------------------------------------------
# RAF-DB (basic): EmoLabel/list_patition_label.txt, Image/aligned/*_aligned.jpg or Image/original/*.jpg
RAFDB_CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
RAFDB_LABELS = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6}  # publisher's 1..7 -> index


def build_rafdb(root: str, split: str, on_error: str = "skip", variant: str = "aligned") -> FERDataset:
    if split not in ("train", "test"):
        raise DataError(f"rafdb: split must be train or test, got {split!r}")
    if variant not in ("aligned", "original"):
        raise DataError(f"rafdb: variant must be aligned or original, got {variant!r}")
    base = require_dir(Path(root), "rafdb root")
    label_file = require_file(base / "EmoLabel" / "list_patition_label.txt", "rafdb label file")
    img_dir = require_dir(base / "Image" / variant, f"rafdb {variant} images")
    col = SampleCollector("rafdb", on_error)
    for n, line in enumerate(label_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in RAFDB_LABELS:
            col.skip(f"{label_file}:{n}", f"expected '<name>.jpg <label 1-7>', got {line!r}")
            continue
        name, raw = parts[0], int(parts[1])
        if not name.startswith(split + "_"):
            continue
        stem = Path(name).stem
        fname = f"{stem}_aligned.jpg" if variant == "aligned" else name
        col.add_file(img_dir / fname, id=stem, label=RAFDB_LABELS[raw])
    return FERDataset("rafdb", split, RAFDB_CLASSES, col.samples, on_error=on_error, skipped=col.skipped,
                      root=root)


# ---------------------------------------------------------------------------------------------------------
# FER2013: fer2013.csv (emotion, pixels, Usage) or the image-folder release train|test/<class>/<Usage>_<id>.jpg
# Class names that mean the same expression across the sets' own vocabularies; canonical_class maps each to one.
CLASS_SYNONYMS = {"happiness": "happy", "sadness": "sad", "anger": "angry"}


def canonical_class(name: str) -> str:
    """The one name of an expression across data sets (``Happiness``, ``happiness`` and ``happy`` -> ``happy``)."""
    return CLASS_SYNONYMS.get(name.lower(), name.lower())


def class_indices(names: Sequence[str], classes: Sequence[str]) -> list[int]:
    """Each of ``names`` (a data set's classes) as an index of ``classes`` (a model's), matched by
    :func:`canonical_class`; -1 where ``classes`` has no such expression."""
    index = {canonical_class(c): j for j, c in enumerate(classes)}
    return [index.get(canonical_class(n), -1) for n in names]


FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_FOLDERS = {name: i for i, name in enumerate(FER2013_CLASSES)}  # folder name -> index
FER2013_USAGE = {"train": "Training", "val": "PublicTest", "publictest": "PublicTest", "test": "PrivateTest",
                 "privatetest": "PrivateTest"}


def _fer2013_csv_rows(csv_path: Path, col: SampleCollector, usage: str | None) -> list[Sample]:
    samples = []
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {sorted(missing)}; expected emotion, pixels, Usage")
        for row_no, row in enumerate(reader):
            if usage is not None and row["Usage"] != usage:
                continue
            try:
                label = int(row["emotion"])
                pix = np.array(row["pixels"].split(), dtype=np.uint8)
            except ValueError:
                col.skip(f"{csv_path}:row {row_no + 2}", "non-numeric emotion or pixels")
                continue
            if label not in range(7) or pix.size != 48 * 48:
                col.skip(f"{csv_path}:row {row_no + 2}", f"emotion {label} not in 0..6 or {pix.size} pixels != 2304")
                continue
            samples.append(Sample(id=f"row{row_no:05d}", label=label, pixels=pix.reshape(48, 48)))
    return samples


def build_fer2013(root: str, split: str, on_error: str = "skip") -> FERDataset:
    if split not in FER2013_USAGE:
        raise DataError(f"fer2013: split must be one of {sorted(FER2013_USAGE)}, got {split!r}")
    usage = FER2013_USAGE[split]
    base = Path(root)
    col = SampleCollector("fer2013", on_error)
    csv_path = base if base.suffix == ".csv" else base / "fer2013.csv"
    if csv_path.is_file():
        samples = _fer2013_csv_rows(csv_path, col, usage)
        return FERDataset("fer2013", split, FER2013_CLASSES, samples, on_error=on_error, skipped=col.skipped,
                          root=root)
    require_dir(base, "fer2013 root")
    if not (base / "train").is_dir() and not (base / "test").is_dir():
        raise DataError(f"fer2013: {base} holds neither fer2013.csv nor train/ and test/ class folders")
    folder = "train" if usage == "Training" else "test"
    seen_prefixes: Counter[str] = Counter()
    for cls_dir in sorted(p for p in (base / folder).iterdir() if p.is_dir()) if (base / folder).is_dir() else []:
        if cls_dir.name.lower() not in FER2013_FOLDERS:
            raise DataError(f"fer2013: unexpected class folder {cls_dir} (expected {sorted(FER2013_FOLDERS)})")
        for path in image_files(cls_dir):
            prefix = path.name.split("_", 1)[0]
            seen_prefixes[prefix] += 1
            if prefix in ("Training", "PublicTest", "PrivateTest") and prefix != usage:
                continue
            if prefix not in ("Training", "PublicTest", "PrivateTest") and folder == "test" and usage != "PrivateTest":
                continue  # un-prefixed test files are taken as the test split
            col.add_file(path, id=f"{folder}/{cls_dir.name}/{path.name}", label=FER2013_FOLDERS[cls_dir.name.lower()])
    if not col.samples:
        held = ", ".join(f"{k}: {v}" for k, v in seen_prefixes.items()) or "nothing"
        raise DataError(f"fer2013: no {usage} images under {base / folder} (it holds {held}); "
                        f"use split 'val'/'publictest' for PublicTest or 'test' for PrivateTest")
    return FERDataset("fer2013", split, FER2013_CLASSES, col.samples, on_error=on_error, skipped=col.skipped,
                      root=root)


# ---------------------------------------------------------------------------------------------------------
# FERPlus: FER2013Train|Valid|Test/label.csv (+ ferNNNNNNN.png), or fer2013new.csv joined to fer2013.csv
FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
FERPLUS_VOTES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown",
                 "NF")  # column order of the ten vote counts
FERPLUS_FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
FERPLUS_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def ferplus_label(votes: list[float], mode: str) -> tuple[int, tuple[float, ...] | None, str | None]:
    """(label, soft target, reason dropped) from the ten vote counts."""
    v = np.asarray(votes, dtype=np.float64)
    top = v.max()
    if top <= 0:
        return -1, None, "no votes"
    winners = np.flatnonzero(v == top)
    if len(winners) > 1:
        return -1, None, "tied majority"
    if winners[0] >= 8:
        return -1, None, f"majority {FERPLUS_VOTES[winners[0]]}"
    if mode == "majority":
        return int(winners[0]), None, None
    emo = v[:8]
    return int(winners[0]), tuple((emo / emo.sum()).tolist()), None


def build_ferplus(root: str, split: str, on_error: str = "skip", label_mode: str = "majority",
                  fer2013_csv: str | None = None) -> FERDataset:
    if split not in FERPLUS_FOLDERS:
        raise DataError(f"ferplus: split must be train, val or test, got {split!r}")
    if label_mode not in ("majority", "distribution"):
        raise DataError(f"ferplus: label_mode must be majority or distribution, got {label_mode!r}")
    base = require_dir(Path(root), "ferplus root")
    col = SampleCollector("ferplus", on_error)
    excluded: Counter[str] = Counter()
    folder = base / FERPLUS_FOLDERS[split]
    if (folder / "label.csv").is_file():
        with (folder / "label.csv").open(newline="") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if not row:
                    continue
                if len(row) != 12:
                    col.skip(f"{folder / 'label.csv'}:{n}", f"expected 12 fields (name, box, 10 votes), got {len(row)}")
                    continue
                label, soft, why = ferplus_label([float(x) for x in row[2:]], label_mode)
                if why:
                    excluded[why] += 1
                    continue
                col.add_file(folder / row[0], id=f"{FERPLUS_FOLDERS[split]}/{row[0]}", label=label, soft=soft)
    else:
        new_csv = require_file(base / "fer2013new.csv", f"ferplus: neither {folder}/label.csv nor fer2013new.csv")
        old_csv = Path(fer2013_csv) if fer2013_csv else base / "fer2013.csv"
        require_file(old_csv, "ferplus needs the original fer2013.csv for pixels (option fer2013_csv=...)")
        pixels = _fer2013_csv_rows(old_csv, SampleCollector("fer2013", "strict"), None)
        with new_csv.open(newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        if len(rows) != len(pixels):
            raise DataError(f"ferplus: {new_csv} has {len(rows)} rows but {old_csv} has {len(pixels)}; they must align")
        for row, px in zip(rows, pixels, strict=True):
            if row[0] != FERPLUS_USAGE[split]:
                continue
            label, soft, why = ferplus_label([float(x) for x in row[2:12]], label_mode)
            if why:
                excluded[why] += 1
                continue
            col.samples.append(Sample(id=f"{px.id}", label=label, soft=soft, pixels=px.pixels))
    ds = FERDataset("ferplus", split, FERPLUS_CLASSES, col.samples, on_error=on_error, skipped=col.skipped, root=root)
    ds.excluded = dict(excluded)
    return ds


# ---------------------------------------------------------------------------------------------------------
# AffectNet (manually annotated): training.csv / validation.csv with face boxes; or train_set|val_set layout
AFFECTNET_CLASSES_8 = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
AFFECTNET_LABELS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7}  # 8 none, 9 uncertain, 10 no-face: dropped


def build_affectnet(root: str, split: str, on_error: str = "skip", num_classes: int = 7) -> FERDataset:
    if split not in ("train", "test"):
        raise DataError(f"affectnet: split must be train or test (the official validation set), got {split!r}")
    if num_classes not in (7, 8):
        raise DataError(f"affectnet: num_classes must be 7 or 8, got {num_classes}")
    classes = AFFECTNET_CLASSES_8[:num_classes]
    base = require_dir(Path(root), "affectnet root")
    col = SampleCollector("affectnet", on_error)
    excluded: Counter[str] = Counter()
    name = "training.csv" if split == "train" else "validation.csv"
    csv_path = next((p for p in (base / name, base / "Manually_Annotated_file_lists" / name) if p.is_file()), None)
    if csv_path is not None:
        img_root = base / "Manually_Annotated_Images"
        img_root = img_root if img_root.is_dir() else base
        with csv_path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            need = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression"]
            # validation.csv of some copies has no header: fall back to the documented column order
            if all(k in header for k in need):
                idx = {k: header.index(k) for k in need}
            else:
                idx = dict(zip(need, [0, 1, 2, 3, 4, 6], strict=True))
            if idx["expression"] == 6 and header and header[0] != "subDirectory_filePath":
                reader = iter([header, *reader])
            for n, row in enumerate(reader, 2):
                try:
                    expr = int(float(row[idx["expression"]]))
                    box = tuple(int(float(row[idx[k]])) for k in ("face_x", "face_y", "face_width", "face_height"))
                except (ValueError, IndexError):
                    col.skip(f"{csv_path}:{n}", "malformed row")
                    continue
                if expr not in AFFECTNET_LABELS or AFFECTNET_LABELS[expr] >= num_classes:
                    excluded[f"expression {expr}"] += 1
                    continue
                rel = row[idx["subDirectory_filePath"]]
                col.add_file(img_root / rel, id=rel, label=AFFECTNET_LABELS[expr], box=box)
    else:
        sub = base / ("train_set" if split == "train" else "val_set")
        ann = require_dir(sub / "annotations", "affectnet annotations")
        imgs = require_dir(sub / "images", "affectnet images")
        for img in image_files(imgs):
            exp_file = ann / f"{img.stem}_exp.npy"
            if not exp_file.is_file():
                col.skip(str(img), f"no annotation {exp_file.name}")
                continue
            expr = int(np.load(exp_file, allow_pickle=False))
            if expr not in AFFECTNET_LABELS or AFFECTNET_LABELS[expr] >= num_classes:
                excluded[f"expression {expr}"] += 1
                continue
            col.add_file(img, id=f"{sub.name}/{img.name}", label=AFFECTNET_LABELS[expr])
    ds = FERDataset("affectnet", split, classes, col.samples, on_error=on_error, skipped=col.skipped, root=root)
    ds.excluded = dict(excluded)
    return ds


# ---------------------------------------------------------------------------------------------------------
# SFEW 2.0: Train|Val/<Class>/*.png; Val is the test split (as the field reports it)
SFEW_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SFEW_FOLDERS = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "neutral": 4, "sad": 5, "surprise": 6}


def _class_tree(name: str, folder: Path, table: dict[str, int], col: SampleCollector, id_prefix: str,
                subject: Callable[[str], str | None] | None = None) -> None:
    """Every image of ``folder/<class>/``; ``subject(file name)`` gives the group id that derived splits keep on
    one side (SFEW: the movie)."""
    require_dir(folder, f"{name} split folder")
    for cls_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        key = cls_dir.name.lower()
        if key not in table:
            raise DataError(f"{name}: unexpected class folder {cls_dir} (expected {sorted(table)})")
        files = image_files(cls_dir)
        if not files:
            col.skip(str(cls_dir), "empty class folder")
        for path in files:
            col.add_file(path, id=f"{id_prefix}{cls_dir.name}/{path.relative_to(cls_dir)}", label=table[key],
                         subject=subject(path.name) if subject else None)


_SFEW_MOVIE = re.compile(r"^(.+?)[_-]\d")  # Airheads_000519240_00000005.png, OceansThirteen-010619400_...


def sfew_movie(file_name: str) -> str:
    """The movie an SFEW image comes from (its file name's prefix): faces of one movie, often of one actor, stay
    on one side of a holdout or fold."""
    m = _SFEW_MOVIE.match(file_name)
    return m.group(1) if m else Path(file_name).stem


def build_sfew(root: str, split: str, on_error: str = "skip") -> FERDataset:
    folders = {"train": "Train", "test": "Val", "val": "Val"}
    if split not in folders:
        raise DataError(f"sfew: split must be train or test (= Val), got {split!r}")
    col = SampleCollector("sfew", on_error)
    _class_tree("sfew", Path(root) / folders[split], SFEW_FOLDERS, col, f"{folders[split]}/", subject=sfew_movie)
    return FERDataset("sfew", split, SFEW_CLASSES, col.samples, on_error=on_error, skipped=col.skipped, root=root)


# ---------------------------------------------------------------------------------------------------------
# Plain folders: root/<class>/* or root/<split>/<class>/*
def build_folder(root: str, split: str, on_error: str = "skip", classes: list[str] | None = None) -> FERDataset:
    base = require_dir(Path(root), "folder root")
    split_dir = base / split
    folder = split_dir if split_dir.is_dir() else base
    if folder is base and split not in ("all", "train"):
        raise DataError(f"folder: {base} has no {split}/ subfolder (found {sorted(p.name for p in base.iterdir())})")
    names = classes or sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        raise DataError(f"folder: no class subfolders under {folder}")
    table = {n.lower(): i for i, n in enumerate(names)}
    col = SampleCollector("folder", on_error)
    _class_tree("folder", folder, table, col, f"{split}/" if folder is split_dir else "")  # ids unique across splits
    return FERDataset("folder", split, names, col.samples, on_error=on_error, skipped=col.skipped, root=root)


