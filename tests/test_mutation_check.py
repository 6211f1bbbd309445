"""scripts/mutation_check.py stays applicable: every breakage's text is still in the source, once, and every test it
names still exists. (The check itself, which runs the tests against each breakage, is not part of this suite.)"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mutation_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("mutation_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up while the class is created
    spec.loader.exec_module(mod)
    return mod


def test_every_breakage_still_applies():
    out = subprocess.run([sys.executable, str(SCRIPT), "--check-only"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"\d+ breakages apply\n", out.stdout)


def test_every_named_test_exists():
    mc = _module()
    names = [b.name for b in mc.BREAKAGES]
    assert len(names) == len(set(names))
    for b in mc.BREAKAGES:
        assert b.tests, b.name
        for node in b.tests:
            path, _, func = node.partition("::")
            assert (ROOT / path).is_file(), (b.name, node)
            if func:
                name = func.split("[")[0]
                assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), (b.name, node)
