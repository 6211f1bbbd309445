"""The training recipes shipped inside the package, and how a recipe file names its base.

A recipe is a YAML file of run-config keys (:mod:`fdrl.config`) that says only what differs from its base: the
config's defaults (the paper's optimiser, schedule and losses), or the recipe it names with ``inherit:``. Its
``description:`` is the one line ``fdrl recipes`` prints. The packaged ones live beside this module
(``fdrl/recipes/NAME.yaml``), so ``fdrl train --recipe NAME`` works from any installation; a user's own file
(``--config my.yaml``) may inherit one of them by name (``inherit: fer2013``) or another file by its path
(``inherit: base.yaml``, relative to the file). What the keys mean, and how layers merge, is the config's concern;
this module only finds and reads the files.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnknownRecipeError, unknown_name

SUFFIXES = (".yaml", ".yml")
META_KEYS = ("inherit", "description")  # keys of a recipe file that are not config keys


def recipe_dir() -> Path:
    """The folder of the packaged recipes."""
    return Path(str(resources.files(__name__)))


def list_recipes() -> list[str]:
    """The names of the packaged recipes, sorted."""
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def names_a_file(ref: str | os.PathLike[str]) -> bool:
    """Whether ``ref`` is a file path rather than a recipe name: a ``Path``, or text with a YAML suffix or a folder."""
    if isinstance(ref, os.PathLike):
        return True
    return ref.endswith(SUFFIXES) or "/" in ref or os.sep in ref


def recipe_path(name: str) -> Path:
    """The file of the packaged recipe ``name``; :class:`~fdrl.errors.UnknownRecipeError` lists the others."""
    known = list_recipes()
    if name not in known:
        error = unknown_name("recipe", name, known, UnknownRecipeError)
        twin = name.removesuffix("_baseline")
        if twin != name and twin in known:  # the twin files are a switch now
            error = UnknownRecipeError(f"{error}; the baseline twin of {twin!r} is `--recipe {twin} --baseline` "
                                       f"(in a config: model_name=baseline_resnet18)")
        raise error
    return recipe_dir() / f"{name}.yaml"


def read_file(path: Path) -> dict[str, Any]:
    """One recipe file as a mapping (its ``inherit`` and ``description`` included)."""
    import yaml

    if not path.is_file():
        stem, hint = path.stem.removesuffix("_baseline"), ""
        if stem in list_recipes():
            hint = f"; a recipe of that name ships in the package: --recipe {stem}" + (
                " --baseline" if stem != path.stem else "")
        raise ConfigError(f"config file {str(path)!r} does not exist{hint}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return loaded


def describe(name: str) -> str:
    """The packaged recipe's one-line ``description``."""
    return str(read_file(recipe_path(name)).get("description") or "").strip()


def recipe_layers(source: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """The chain of files behind ``source`` (a recipe name or a file path), base first, as (where, config keys)
    pairs without the recipe-only keys; the caller merges them."""
    layers: list[tuple[str, dict[str, Any]]] = []
    seen: list[Path] = []
    ref: str | os.PathLike[str] | None = source
    here: Path | None = None  # the folder a relative ``inherit:`` path is read from
    while ref is not None:
        if names_a_file(ref):
            path = Path(ref) if here is None or Path(ref).is_absolute() else here / ref
        else:
            path = recipe_path(str(ref))
        if path.resolve() in seen:
            raise ConfigError(f"{path}: inherit cycle ({' -> '.join(str(p) for p in [*seen, path.resolve()])})")
        seen.append(path.resolve())
        raw = read_file(path)
        ref, here = raw.get("inherit"), path.parent
        if ref is not None and not isinstance(ref, str):
            raise ConfigError(f"{path}: inherit: expected a recipe name or a YAML file path, got {ref!r}")
        layers.append((str(path), {k: v for k, v in raw.items() if k not in META_KEYS}))
    return layers[::-1]
