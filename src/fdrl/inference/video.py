"""Expressions in a video file or a camera stream, frame by frame, with an optional annotated copy."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .annotate import annotate
from .results import ImageStatus, PredictionResult


def predict_video(rec, source: str, stride: int = 1, max_frames: int | None = None, save_dir: str | None = None,
                  save_name: Path | None = None):
    """Decode with OpenCV (file or camera index), classify every ``stride``-th frame, optional annotated video."""
    import cv2
    import numpy as np
    from PIL import Image

    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    res = PredictionResult(classes=rec.classes)
    writer = None
    try:  # both released however the loop ends (an error mid-video, Ctrl+C on a camera)
        if not cap.isOpened():
            res.images.append(ImageStatus(source, "unreadable: cannot open video/camera"))
            return res
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

        def frames():
            idx = 0
            while max_frames is None or idx < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                if idx % stride == 0:
                    yield idx, frame
                idx += 1

        t0, n = time.time(), 0
        tty = sys.stderr.isatty()
        for idx, frame, faces in rec.predict_frames(frames(), bgr=True):
            n += 1
            for f in faces:
                f.image_id = source
            res.faces += faces
            if save_dir:
                if writer is None:
                    out = Path(save_dir) / (save_name or Path(Path(source).stem + "_annotated.mp4"))
                    out.parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps / stride,
                                             (frame.shape[1], frame.shape[0]))
                img = annotate(Image.fromarray(frame[..., ::-1]), faces)
                writer.write(np.asarray(img)[..., ::-1].copy())
            rate = n / max(1e-9, time.time() - t0)
            msg = f"{source}: frame {idx + 1}/{total or '?'} {rate:.1f} frames/s"
            if tty:
                print("\r" + msg, end="", file=sys.stderr)
            elif n % 100 == 0:
                print(msg, file=sys.stderr)
        if tty:
            print(file=sys.stderr)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    res.images.append(ImageStatus(source, "ok" if res.faces else "no_face", len(res.faces)))
    return res
