"""Turn a run's checkpoint into a shipped model: fp16 weights, no optimiser state, at ``fdrl/weights/<file>``.

    python scripts/ship_model.py --checkpoint runs/D_fdrl_s0/best.pt --name fer2013
    python scripts/choose_face_margin.py --checkpoint src/fdrl/weights/fdrl_fer2013.pt --split train/holdout --write

``--name`` must be a key of ``fdrl.inference.packaged.PACKAGED_MODELS`` (the file name comes from there). The
checkpoint must have been selected on a validation split: one whose run selected on a test split
(``fdrl.data.registry.is_test_split``, e.g. FER2013's PublicTest, also called ``val``) is refused. A test split the
run only evaluated at the end is fine: training refuses a test split as its validation split.
Prints the file size and sha256 for the model card.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from fdrl.checkpoint import read_checkpoint, slim_checkpoint
from fdrl.data.registry import is_test_split
from fdrl.inference.packaged import PACKAGED_MODELS

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "fdrl" / "weights"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--name", required=True, choices=sorted(PACKAGED_MODELS))
    ap.add_argument("--out-dir", default=str(WEIGHTS), help="default: the package's weights folder")
    args = ap.parse_args(argv)
    ck = read_checkpoint(args.checkpoint)
    config = ck.get("config") or {}
    data, select = config.get("data") or {}, (config.get("train") or {}).get("select", "val")
    if select == "val" and data.get("dataset") and is_test_split(data["dataset"], data.get("val_split") or "val"):
        raise SystemExit(f"{args.checkpoint}: its run selected the checkpoint on {data['dataset']}'s test split "
                         f"{data.get('val_split')!r}; retrain selecting on a validation split (e.g. train/holdout)")
    dst = Path(args.out_dir) / PACKAGED_MODELS[args.name]
    slim_checkpoint(args.checkpoint, dst, half=True)
    digest = hashlib.sha256(dst.read_bytes()).hexdigest()
    print(f"wrote {dst}: {dst.stat().st_size / 2**20:.1f} MiB, sha256 {digest}, epoch {ck.get('epoch')}, "
          f"val accuracy {ck.get('best_val_accuracy')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
