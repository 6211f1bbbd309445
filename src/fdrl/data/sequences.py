"""Image-sequence benchmarks (CK+, MMI, Oulu-CASIA): the three peak frames of each labelled sequence.

The peak is the end of the sequence for CK+ and Oulu-CASIA (neutral to apex) and the middle for MMI's session
videos (neutral, apex, neutral).

All three are used with subject-independent k-fold protocols (``fold3/train`` / ``fold3/test``, made in
:mod:`fdrl.data.registry`); every sample carries its subject id, parsed from the publisher's names.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from ..errors import DataError
from ..media import VIDEO_EXTENSIONS, video_frame_count
from .base import (
    FERDataset,
    ImageReadError,
    Sample,
    SampleCollector,
    image_files,
    require_dir,
)

# CK+ Emotion/*.txt codes: 0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise
CKPLUS_VARIANTS = {
    "6": (("anger", "disgust", "fear", "happiness", "sadness", "surprise"), {1: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}),
    "7_neutral": (("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"),
                  {1: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}),
    "7_contempt": (("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"),
                   {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6}),
}
# CK+48 folder names -> CK+ codes
CK48_FOLDERS = {"anger": 1, "contempt": 2, "disgust": 3, "fear": 4, "happy": 5, "sadness": 6, "surprise": 7}
CK48_NAME = re.compile(r"^(S\d{3})_(\d{3})_(\d+)")


def build_ckplus(root: str, split: str = "all", on_error: str = "skip", classes: str = "6",
                 frames: int = 3) -> FERDataset:
    """CK+ as distributed (cohn-kanade-images/ + Emotion/) or the pre-cropped CK+48/<class>/ folder."""
    if classes not in CKPLUS_VARIANTS:
        raise DataError(f"ckplus: classes must be one of {sorted(CKPLUS_VARIANTS)}, got {classes!r}")
    names, table = CKPLUS_VARIANTS[classes]
    base = require_dir(Path(root), "ckplus root")
    col = SampleCollector("ckplus", on_error)
    excluded = 0
    if (base / "cohn-kanade-images").is_dir():
        emo_root = require_dir(base / "Emotion", "ckplus Emotion labels")
        for emo_file in sorted(emo_root.glob("S*/*/*_emotion.txt")):
            subject, seq = emo_file.parent.parent.name, emo_file.parent.name
            try:
                code = int(float(emo_file.read_text().split()[0]))
            except (ValueError, IndexError):
                col.skip(str(emo_file), "expected one number (emotion code 0-7)")
                continue
            if code not in table:
                excluded += 1
                continue
            seq_dir = base / "cohn-kanade-images" / subject / seq
            frames_list = image_files(seq_dir) if seq_dir.is_dir() else []
            if len(frames_list) < frames + 1:
                col.skip(str(seq_dir), f"sequence has {len(frames_list)} frames, need > {frames}")
                continue
            for f in frames_list[-frames:]:
                col.add_file(f, id=f"{subject}/{seq}/{f.name}", label=table[code], subject=subject)
            if classes == "7_neutral":
                col.add_file(frames_list[0], id=f"{subject}/{seq}/{frames_list[0].name}", label=6, subject=subject)
    else:
        for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            code = CK48_FOLDERS.get(cls_dir.name.lower())
            if code is None:
                raise DataError(f"ckplus: {base} is neither CK+ (cohn-kanade-images/) nor CK+48 (class folders "
                                f"{sorted(CK48_FOLDERS)}); found {cls_dir.name}")
            if code not in table:
                excluded += len(image_files(cls_dir))
                continue
            for f in image_files(cls_dir):
                m = CK48_NAME.match(f.name)
                if not m:
                    col.skip(str(f), "name does not match Sxxx_yyy_zzzzzzzz")
                    continue
                col.add_file(f, id=f"{cls_dir.name}/{f.name}", label=table[code], subject=m.group(1))
    ds = FERDataset("ckplus", split, names, col.samples, on_error=on_error, skipped=col.skipped, root=root)
    ds.excluded = {"label outside the class set": excluded} if excluded else {}
    return ds


# Oulu-CASIA: [OriginalImg/|Aligned/...]VL/Strong/P001/<Emotion>/000.jpeg
OULU_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
OULU_FOLDERS = {"anger": 0, "disgust": 1, "fear": 2, "happiness": 3, "happy": 3, "sadness": 4, "sad": 4,
                "surprise": 5}


def build_oulu_casia(root: str, split: str = "all", on_error: str = "skip", illumination: str = "Strong",
                     frames: int = 3) -> FERDataset:
    base = require_dir(Path(root), "oulu_casia root")
    hits = sorted(p for p in base.rglob(illumination) if p.is_dir() and p.parent.name.upper() in ("VL", "VIS"))
    if not hits:
        raise DataError(f"oulu_casia: no VL/{illumination}/ folder under {base} (expected e.g. OriginalImg/VL/Strong)")
    col = SampleCollector("oulu_casia", on_error)
    for subject_dir in sorted(p for p in hits[0].iterdir() if p.is_dir()):
        for emo_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            label = OULU_FOLDERS.get(emo_dir.name.lower())
            if label is None:
                col.skip(str(emo_dir), f"unknown emotion folder (expected {sorted(set(OULU_FOLDERS))})")
                continue
            seq = image_files(emo_dir)
            if len(seq) < frames:
                col.skip(str(emo_dir), f"{len(seq)} frames, need {frames}")
                continue
            for f in seq[-frames:]:
                col.add_file(f, id=f"{subject_dir.name}/{emo_dir.name}/{f.name}", label=label, subject=subject_dir.name)
    return FERDataset("oulu_casia", split, OULU_CLASSES, col.samples, on_error=on_error, skipped=col.skipped,
                      root=root)


# MMI as the web database distributes it: Sessions/<session id>/<Sxxx-yyy>.avi with <Sxxx-yyy>.xml beside it,
# whose <Metatag Name="Emotion" Value="k"/> codes the displayed emotion (1 anger, 2 disgust, 3 fear,
# 4 happiness, 5 sadness, 6 surprise; other codes and sessions without the tag are AU-only or non-basic).
# Its sequences run neutral-apex-neutral, so the peak frames are the middle ones.
MMI_CLASSES = OULU_CLASSES
MMI_EMOTION_CODES = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}
MMI_VIDEO_NAME = re.compile(r"^(S\d{3})-(\d{3})")


def _mmi_emotion(xml_path: Path) -> int | None:
    """The session's Emotion metatag value, or None when it has none; raises ValueError on a malformed file."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{xml_path.name}: malformed XML ({exc})") from exc
    for el in root.iter():
        if el.tag.lower() == "metatag" and (el.get("Name") or "").strip().lower() == "emotion":
            value = (el.get("Value") or "").strip()
            try:
                return int(value)
            except ValueError as exc:
                raise ValueError(f"{xml_path.name}: Emotion value {value!r} is not an integer") from exc
    return None


def _peak_indices(n: int, frames: int, peak: str) -> list[int]:
    if peak == "last":
        return list(range(n - frames, n))
    mid = n // 2 - frames // 2
    return list(range(mid, mid + frames))


class _Excluded(Exception):
    """A sequence the label protocol leaves out (not an error); the message is the reason."""


def _mmi_sequence(video: Path, frames: int) -> tuple[int, str, int]:
    """(label, subject, frame count) of one session video; ValueError names what is wrong with it."""
    xml = video.with_suffix(".xml")
    if not xml.is_file():
        raise ValueError(f"no session metadata {xml.name} beside the video")
    code = _mmi_emotion(xml)
    if code is None:
        raise _Excluded("no Emotion metatag (AU-only session)")
    if code not in MMI_EMOTION_CODES:
        raise _Excluded("emotion code outside the six basic (1-6)")
    m = MMI_VIDEO_NAME.match(video.stem)
    if not m:
        raise ValueError("cannot read the subject id from the name (expected Sxxx-yyy)")
    try:
        n = video_frame_count(video)
    except ImageReadError as exc:
        raise ValueError(str(exc)) from exc
    if n < frames:
        raise ValueError(f"{n} frames, need {frames}")
    return MMI_EMOTION_CODES[code], m.group(1), n


def _build_mmi_sessions(sessions: Path, col: SampleCollector, frames: int, peak: str) -> Counter:
    excluded: Counter = Counter()
    for session in sorted(p for p in sessions.iterdir() if p.is_dir()):
        videos = sorted(p for p in session.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if not videos:
            if image_files(session):
                excluded["still-image session (no video)"] += 1
            else:
                col.skip(str(session), "session folder holds no video")
            continue
        for video in videos:
            try:
                label, subject, n = _mmi_sequence(video, frames)
            except _Excluded as exc:
                excluded[str(exc)] += 1
                continue
            except ValueError as exc:
                col.skip(str(video), str(exc))
                continue
            for i in _peak_indices(n, frames, peak):
                col.samples.append(Sample(id=f"{session.name}/{video.name}#{i:04d}", path=str(video), frame=i,
                                          label=label, subject=subject))
    return excluded


def build_mmi(root: str, split: str = "all", on_error: str = "skip", frames: int = 3,
              peak: str | None = None) -> FERDataset:
    """MMI from its session folders (videos + XML) or from extracted frames ``<subject>/<emotion>/<sequence>/``.

    ``peak``: which frames are the peak, ``middle`` (default for session videos, which run onset-apex-offset)
    or ``last`` (default for extracted frames, the same rule as CK+ and Oulu-CASIA).
    """
    if peak not in (None, "middle", "last"):
        raise DataError(f"mmi: peak must be 'middle' or 'last', got {peak!r}")
    base = require_dir(Path(root), "mmi root")
    col = SampleCollector("mmi", on_error)
    sessions = base / "Sessions" if (base / "Sessions").is_dir() else base
    excluded: Counter = Counter()
    if any(p.suffix.lower() in VIDEO_EXTENSIONS for p in sessions.glob("*/*")):
        excluded = _build_mmi_sessions(sessions, col, frames, peak or "middle")
    else:
        for subject_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for emo_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
                label = OULU_FOLDERS.get(emo_dir.name.lower())
                if label is None:
                    col.skip(str(emo_dir), "unknown emotion folder")
                    continue
                for seq_dir in sorted(p for p in emo_dir.iterdir() if p.is_dir()):
                    seq = image_files(seq_dir)
                    if len(seq) < frames:
                        col.skip(str(seq_dir), f"{len(seq)} frames, need {frames}")
                        continue
                    for i in _peak_indices(len(seq), frames, peak or "last"):
                        f = seq[i]
                        col.add_file(f, id=f"{subject_dir.name}/{emo_dir.name}/{seq_dir.name}/{f.name}",
                                     label=label, subject=subject_dir.name)
    ds = FERDataset("mmi", split, MMI_CLASSES, col.samples, on_error=on_error, skipped=col.skipped, root=root)
    ds.excluded = dict(excluded)
    return ds
