"""The documentation: the README's promises CI relies on, the site's navigation, links and API entries, and (where
MkDocs is installed) a strict build of the site."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
TEST_COMMAND = 'pip install -e ".[test]" && ruff check . && python -m pytest -q'


def _nav_files(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [f for item in node for f in _nav_files(item)]
    if isinstance(node, dict):
        return [f for value in node.values() for f in _nav_files(value)]
    return []


NAV = _nav_files(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code, where link-like text is not a link."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def test_readme_keeps_the_ci_test_command_and_stays_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert TEST_COMMAND in lines  # .ci/run runs exactly this line
    assert len(lines) <= 200, "the README is the front door: move details into docs/"


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    assert NAV and len(NAV) == len(set(NAV))
    missing = [f for f in NAV if not (DOCS / f).is_file()]
    assert not missing, f"mkdocs.yml nav names missing pages: {missing}"
    orphans = sorted(p.name for p in DOCS.glob("*.md") if p.name not in NAV)
    assert not orphans, f"pages not in mkdocs.yml's nav: {orphans}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files {broken}"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_included_snippets_exist(page):
    for path in re.findall(r'^--8<-- "([^"]+)"', page.read_text(), flags=re.M):
        assert (ROOT / path).is_file(), f"{page.name} includes a missing file {path}"


def test_api_reference_covers_the_public_api():
    import fdrl

    entries = {line.split()[-1].rsplit(".", 1)[-1] for line in (DOCS / "api.md").read_text().splitlines()
               if line.startswith("::: ")}
    public = set(fdrl.__all__) - {"__version__"}
    assert not public - entries, f"public names without an API entry: {sorted(public - entries)}"


def test_site_builds_strict(tmp_path):
    """Broken links and API entries naming missing objects fail the build. Skips where MkDocs is not installed,
    except under FDRL_REQUIRE_DOCS=1 (set by .ci/run, which installs the docs extra)."""
    if any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings")):
        reason = 'MkDocs not installed (pip install -e ".[docs]")'
        if os.environ.get("FDRL_REQUIRE_DOCS") == "1":
            pytest.fail(f"FDRL_REQUIRE_DOCS=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
