"""Moving a reproduction's inputs and outputs through size-limited transfers.

For a GPU machine that receives a size-limited copy of your files, or returns only a few files of limited size:

- :func:`pack_folder` puts a data root into one reproducible ``.tar.gz`` (original bytes; files matching
  ``exclude`` left out, e.g. a test split you do not report) and, with ``part_bytes``, cuts it into parts;
  ``fdrl reproduce --data ARCHIVE`` reads the archive (or its parts) directly.
- :func:`export_checkpoint` writes an inference-only copy of a checkpoint (fp16, no optimiser state), in parts
  when asked; :func:`join_parts` puts any parts back together.
- :func:`export_trunk` saves the pretrained trunk weights a recipe names (e.g. ``trunk.pretrained_path=dlib``,
  read from an installed package) as a torch file, for a machine without that package
  (``--set trunk.pretrained_path=FILE``).

Every file travels with a ``<name>.json`` manifest holding its size and sha256, checked on arrival.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ConfigError, DataError, FdrlError
from ..records import sha256_file


def _quiet(msg: str) -> None:
    pass


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """The manifest of ``path`` (``<name>.json``), or ``path`` itself when it is one."""
    path = Path(path)
    return path if path.name.endswith(".json") else path.with_name(f"{path.name}.json")


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file beside it, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, info: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(info, indent=2) + "\n")


def split_file(src: Path, part_bytes: int) -> list[str]:
    """Cut ``src`` into ``<name>.part0``, ``.part1``, ... of at most ``part_bytes`` beside it, and remove it."""
    if part_bytes < 1:
        raise ConfigError(f"part size must be positive, got {part_bytes} bytes")
    for old in src.parent.glob(f"{src.name}.part*"):
        old.unlink()
    names = []
    with src.open("rb") as fh:
        for i in range(max(1, math.ceil(src.stat().st_size / part_bytes))):
            name = f"{src.name}.part{i}"
            (src.parent / name).write_bytes(fh.read(part_bytes))
            names.append(name)
    src.unlink()
    return names


def describe_file(path: Path, meta: dict[str, Any] | None = None, part_bytes: int | None = None) -> dict[str, Any]:
    """Write ``path``'s manifest (size, sha256, ``meta``); with ``part_bytes``, cut it into parts first."""
    info = {**(meta or {}), "file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    if part_bytes is not None:
        info["parts"] = split_file(path, part_bytes)
    _write_json(manifest_path(path), info)
    return info


def join_parts(manifest: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Rebuild the file a manifest describes (from its parts, or the file itself) at ``out``, its size and sha256
    checked; returns the manifest."""
    mpath = manifest_path(manifest)
    if not mpath.is_file():
        raise DataError(f"{mpath}: no such manifest (the <file>.json written beside a packed or exported file)")
    info = json.loads(mpath.read_text())
    names = info.get("parts") or [info["file"]]
    missing = [n for n in names if not (mpath.parent / n).is_file()]
    if missing:
        raise DataError(f"{mpath.parent}: missing {', '.join(missing)} listed in {mpath.name}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, h, size = out.with_name(f".{out.name}.tmp"), hashlib.sha256(), 0
    with tmp.open("wb") as dst:
        for name in names:
            with (mpath.parent / name).open("rb") as src:
                for block in iter(lambda s=src: s.read(1 << 20), b""):
                    h.update(block)
                    size += len(block)
                    dst.write(block)
    if size != info["bytes"] or h.hexdigest() != info["sha256"]:
        tmp.unlink()
        raise DataError(f"{mpath}: the file rebuilt from {', '.join(names)} has {size} bytes and sha256 "
                        f"{h.hexdigest()[:16]}..., the manifest says {info['bytes']} and {info['sha256'][:16]}...: "
                        f"a part is damaged or stale")
    os.replace(tmp, out)
    return info


# ------------------------------------------------------------------------------------------------------ data
def pack_folder(root: str | os.PathLike[str], archive: str | os.PathLike[str], exclude: Sequence[str] = (),
                part_bytes: int | None = None, log: Callable[[str], None] = _quiet) -> dict[str, Any]:
    """Every file under ``root`` (relative paths matching a glob of ``exclude`` left out) in one ``.tar.gz`` with
    fixed metadata, so the same files give the same archive; then its manifest (and parts, with ``part_bytes``)."""
    root, archive = Path(root), Path(archive)
    if not root.is_dir():
        raise DataError(f"{root}: expected a data folder to pack, which does not exist")
    keep, left = [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, pattern) for pattern in exclude):
            left += 1
        else:
            keep.append(rel)
    if not keep:
        raise DataError(f"{root}: no files to pack" + (f" (all {left} excluded)" if left else ""))
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp, source_bytes = archive.with_name(f".{archive.name}.tmp"), 0
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in keep:
            data = (root / rel).read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
            source_bytes += len(data)
    os.replace(tmp, archive)
    manifest = describe_file(archive, {"files": len(keep), "source_bytes": source_bytes, "excluded": left,
                                       "exclude": list(exclude)}, part_bytes)
    log(f"packed {len(keep)} files ({source_bytes / 1e6:.1f} MB) from {root} into {archive}: "
        f"{manifest['bytes'] / 1e6:.1f} MB" + (f" in {len(manifest['parts'])} parts" if part_bytes else "")
        + (f"; {left} files excluded" if left else ""))
    return manifest


def is_archive(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a packed data archive (``.tar.gz``, ``.tgz``) or its manifest."""
    name = Path(path).name
    return name.endswith((".tar.gz", ".tgz", ".tar.gz.json", ".tgz.json"))


def unpack_archive(path: str | os.PathLike[str], dest: str | os.PathLike[str],
                   log: Callable[[str], None] = _quiet) -> Path:
    """Extract a packed data archive (or the parts its manifest lists) into ``dest`` and return ``dest``; the
    size and sha256 are checked where a manifest is present, and only plain files inside ``dest`` are written."""
    path, dest = Path(path), Path(dest)
    mpath = manifest_path(path)
    archive = mpath.with_name(mpath.name.removesuffix(".json"))
    dest.mkdir(parents=True, exist_ok=True)
    joined = None
    if mpath.is_file():
        info = json.loads(mpath.read_text())
        if info.get("parts"):
            joined = archive = dest.parent / f".{archive.name}.joined"
            join_parts(mpath, joined)
        elif not archive.is_file() or archive.stat().st_size != info["bytes"] or \
                sha256_file(archive) != info["sha256"]:
            raise DataError(f"{archive}: missing, or its size or sha256 differs from {mpath}")
    elif not archive.is_file():
        raise DataError(f"{path}: neither the archive nor its manifest exists")
    n = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                rel = PurePosixPath(member.name)
                if member.isdir():
                    continue
                if not member.isfile() or rel.is_absolute() or ".." in rel.parts:
                    raise DataError(f"{archive}: refusing member {member.name!r} (only plain files inside the "
                                    f"data root belong in a packed data set)")
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with src, target.open("wb") as fh:
                    shutil.copyfileobj(src, fh)
                n += 1
    except tarfile.TarError as exc:
        raise DataError(f"{archive}: not a readable tar archive ({exc})") from exc
    finally:
        if joined is not None:
            joined.unlink(missing_ok=True)
    log(f"unpacked {n} files from {path} into {dest}")
    return dest


# -------------------------------------------------------------------------------------------------- weights
def export_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str], meta: dict[str, Any] | None = None,
                      part_bytes: int | None = None) -> dict[str, Any]:
    """An inference-only copy of checkpoint ``src`` at ``dst`` (fp16 weights, no optimiser state), with its
    manifest; with ``part_bytes``, in parts (``join_parts(dst + ".json", ...)`` rebuilds it)."""
    from ..checkpoint import slim_checkpoint

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    slim_checkpoint(src, dst, half=True)
    return describe_file(dst, meta, part_bytes)


def export_trunk(source: str | os.PathLike[str], dst: str | os.PathLike[str], overrides: Sequence[str] = (),
                 half: bool = True) -> dict[str, Any]:
    """The pretrained trunk weights recipe ``source`` starts from (its ``trunk.pretrained_path``, which may name
    weights read from an installed package) as a torch state dict at ``dst`` (fp16 when ``half``), with its
    manifest; another machine loads them with ``--set trunk.pretrained_path=DST``."""
    import torch

    from ..config import load_config
    from ..models import create_model

    cfg = load_config(source, list(overrides))
    if not cfg.trunk.pretrained_path:
        raise FdrlError(f"recipe {source}: its trunk ({cfg.trunk.name}) starts from no pretrained weights "
                        f"(trunk.pretrained_path is unset): nothing to export")
    model = create_model(cfg.model_name, num_classes=7, **cfg.model_options())
    state = {k: v.half() if (half and v.is_floating_point()) else v for k, v in model.backbone.state_dict().items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, dst)
    return describe_file(dst, {"trunk": cfg.trunk.name, "source": str(cfg.trunk.pretrained_path),
                               "dtype": "float16" if half else "float32"})
