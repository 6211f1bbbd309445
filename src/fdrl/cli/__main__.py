"""``python -m fdrl.cli`` (as ``torchrun -m fdrl.cli train ...`` calls it)."""

import sys

from . import main

sys.exit(main())
