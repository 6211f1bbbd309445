"""Every results table of the docs, printed from the result files in ``results/`` (:mod:`fdrl.tables` renders them).

    python scripts/results_tables.py                    # rewrite every generated table in README.md and docs/*.md
    python scripts/results_tables.py --check            # exit 1 naming every table that differs from its files
    python scripts/results_tables.py --print sfew_cv_dlib+sfew_cv_fer   # one table to stdout

How a table is marked in a page and what a result file holds: :mod:`fdrl.tables`.
"""

import sys
from pathlib import Path

from fdrl.tables import main

if __name__ == "__main__":
    sys.exit(main(root=Path(__file__).resolve().parents[1]))
