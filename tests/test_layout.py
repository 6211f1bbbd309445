"""The package's shape: imports flow one way, with no circle, module-level or function-local.

Layers, lowest first; a module may import its own layer or lower ones, never a higher one.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = [
    ("fdrl.errors", "fdrl.literals", "fdrl.shipped", "fdrl.recipes", "fdrl.records", "fdrl.tables"),
    ("fdrl.models",),
    ("fdrl.losses", "fdrl.optim"),
    ("fdrl.runtime",),
    ("fdrl.faces", "fdrl.media"),
    ("fdrl.config",),
    ("fdrl.checkpoint",),
    ("fdrl.data",),
    ("fdrl.engine",),
    ("fdrl.research",),
    ("fdrl.reproduce",),
    ("fdrl.inference",),
    ("fdrl.cli", "fdrl"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "fdrl").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """Every fdrl module ``name`` imports anywhere in its file (function-local imports included)."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base] + [f"{base}.{a.name}" for a in node.names]  # `from . import x` names a module
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            inside = name.startswith(target + ".")  # a module's own package is already being imported
            if target.startswith("fdrl") and target != name and not inside:
                found.add(target)
    # importing a.b.c runs a/b/__init__ first, unless the importer already lives inside a.b
    for target in list(found):
        parent = target.rpartition(".")[0]
        while parent and parent != "fdrl":
            if not (name == parent or name.startswith(parent + ".")):
                found.add(parent)
            parent = parent.rpartition(".")[0]
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (rank, p)
    assert best is not None, f"{name} belongs to no layer: add it to LAYERS"
    return best[0]


def test_every_module_has_a_layer_and_the_graph_is_real():
    for name in MODULES:
        _layer(name)
    assert "fdrl.faces" in GRAPH["fdrl.data.base"] and "fdrl.errors" in GRAPH["fdrl.faces.registry"]
    assert "fdrl.engine.trainer" in GRAPH["fdrl.cli.training"]  # function-local imports count


def test_errors_imports_nothing_from_the_package():
    assert GRAPH["fdrl.errors"] == set()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_from_a_lower_layer_to_a_higher_one(name):
    up = sorted(t for t in GRAPH[name] if _layer(t) > _layer(name))
    assert not up, f"{name} (layer {_layer(name)}) imports higher layers: {[(t, _layer(t)) for t in up]}"


def test_no_import_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(target):], target]))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name)


def test_train_stays_short():
    tree = ast.parse(MODULES["fdrl.engine.trainer"].read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    assert fn.end_lineno - fn.lineno + 1 <= 80


def test_the_architecture_page_lists_the_layers_of_this_test():
    """docs/architecture.md's layer table names exactly the packages of LAYERS, in the same order."""
    import re

    page = (SRC.parent / "docs" / "architecture.md").read_text()
    rows = [line for line in page.splitlines() if re.match(r"\| \d+ \|", line)]
    documented = [tuple(re.findall(r"`(fdrl[\w.]*)`", row.split("|")[2])) for row in rows]
    assert documented == LAYERS


def test_every_module_is_described_on_the_architecture_page():
    """Each module file of the package is named on the architecture page (a new module gets its one concern)."""
    page = (SRC.parent / "docs" / "architecture.md").read_text()
    missing = sorted(name for name, path in MODULES.items()
                     if path.name != "__init__.py" and f"`{path.name}`" not in page)
    assert not missing, f"modules without a line on docs/architecture.md: {missing}"


def _outside_scripts() -> list[Path]:
    """Scripts and benchmarks, which use the package as a user does. The peer runners in benchmarks/peers/ are
    left out: they run inside each peer's own environment, where fdrl is not installed, and share one protocol
    module there."""
    root = SRC.parent
    return sorted([*(root / "scripts").glob("*.py"), *(root / "benchmarks").glob("*.py")])


@pytest.mark.parametrize("path", _outside_scripts(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scripts_use_the_installed_package_only(path):
    """No ``sys.path`` edits, no import of another script or benchmark, no private (``_name``) fdrl module."""
    siblings = {p.stem for p in _outside_scripts()} | {p.stem for p in (SRC.parent / "benchmarks").glob("*.py")}
    text = path.read_text()
    assert "sys.path" not in text, f"{path.name} edits sys.path"
    assert "spec_from_file_location" not in text, f"{path.name} loads a module by its path"
    for node in ast.walk(ast.parse(text)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        for name in names:
            assert name.split(".")[0] not in siblings, f"{path.name} imports the script {name}"
            assert not any(part.startswith("_") and not part.startswith("__") for part in name.split(".")
                           if name.startswith("fdrl")), f"{path.name} imports the private module {name}"
