"""Check the embedded default job: `fdrl demo` must finish in under 5 minutes and reach >= 95 % test accuracy.

    python benchmarks/demo_check.py [--out runs/demo_check] [--json results/demo_check.json]

Prints the wall time and the measured accuracy; exits 1 when either target is missed. (A check script, not a
timed unit test: its time depends on the machine.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from fdrl.records import run_record, write_json


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo_check")
    p.add_argument("--json", default=None, help="also write the figures to this result file")
    args = p.parse_args()
    t = time.time()
    subprocess.run([sys.executable, "-m", "fdrl.cli", "demo", "--out", args.out], check=True)
    wall = time.time() - t
    s = json.loads((Path(args.out) / "summary.json").read_text())
    acc = s["test_accuracy"]
    ok = wall < 300 and acc >= 0.95
    print(f"demo: {wall:.0f} s wall (target < 300), test accuracy {acc * 100:.2f} % (target >= 95) -> "
          f"{'PASS' if ok else 'FAIL'}")
    if args.json:
        write_json(args.json, run_record("demo_check") | {"wall_seconds": wall, "test_accuracy": acc, "passed": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
