"""scripts/results_table.py: rows read from summary.json files, and a clear line for pairs still training."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "results_table.py"


def _summary(run: Path, seed: int, acc: float, mean_class: float) -> None:
    run.mkdir(parents=True)
    best = {"epoch": 3, "val_accuracy": acc, "val_mean_class_accuracy": mean_class}
    (run / "summary.json").write_text(json.dumps({
        "dataset": "fer2013", "model_name": run.name, "epochs": 3, "selected": "best", "best": best, "last": best,
        "config": {"data": {"test_split": None}, "train": {"seed": seed}}, "train_seconds": 600, "device": "cpu",
        "world_size": 1, "versions": {"torch": "2.13.0+cpu"}}))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_seeds_table_pairs_and_unfinished_pair(tmp_path):
    for seed, (b, f) in enumerate([(0.60, 0.62), (0.61, 0.60)]):
        _summary(tmp_path / f"pair{seed}" / "baseline", seed, b, 0.5)
        _summary(tmp_path / f"pair{seed}" / "fdrl", seed, f, 0.5)
    done = _run("--seeds", str(tmp_path / "pair0"), str(tmp_path / "pair1"))
    assert done.returncode == 0, done.stderr
    assert "| 0 | 60.00 | 62.00 | +2.00 |" in done.stdout and "| 1 | 61.00 | 60.00 | -1.00 |" in done.stdout
    assert "| mean ± std (2 seeds) | 60.50 ± 0.71 | 61.00 ± 1.41 | +0.50 ± 2.12 |" in done.stdout

    (tmp_path / "pair1" / "fdrl" / "summary.json").unlink()  # a pair still training
    out = _run("--seeds", str(tmp_path / "pair0"), str(tmp_path / "pair1"))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "pair1/fdrl/summary.json not found: the run has not finished" in out.stderr

    rows = _run(str(tmp_path / "pair0"), str(tmp_path / "pair1"))  # per-run rows: the unfinished run is named
    assert rows.returncode == 0 and rows.stdout.count("| fer2013 (None) |") == 3
    assert "skipped" in rows.stderr and "pair1/fdrl" in rows.stderr

    (tmp_path / "pair1" / "fdrl").joinpath("summary.json").write_text("{not json")
    bad = _run("--seeds", str(tmp_path / "pair1"))
    assert bad.returncode != 0 and "is not a readable summary" in bad.stderr and "Traceback" not in bad.stderr
