"""The decode cache: mapped not loaded, written whole or not at all, rebuilt when damaged, decoded in parallel."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_image
from fdrl.data import create_dataset
from fdrl.data.cachefile import DATA_OFFSET, SUFFIX
from fdrl.data.decode import MIN_PARALLEL
from fdrl.data.preprocess import pil_to_array
from fdrl.data.tensors import decode_dataset
from fdrl.errors import ConfigError, DataError
from fdrl.media import read_image


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """An image folder large enough for the pool: two classes of PNGs, two files that are not images (the very
    first one, and one in the middle)."""
    root = tmp_path_factory.mktemp("faces")
    for i in range(MIN_PARALLEL + 44):
        write_image(root / ("happy" if i % 2 else "sad") / f"{i:04d}.png", (20, 20), seed=i)
    for bad in ("happy/0001.png", "sad/0100.png"):
        (root / bad).write_text("not an image")
    return root


def _only(folder: Path) -> Path:
    files = sorted(folder.glob(f"*{SUFFIX}"))
    assert len(files) == 1 and not list(folder.glob(".*.tmp")), sorted(folder.iterdir())  # no temp file left
    return files[0]


def test_parallel_decode_equals_serial_and_the_cache_is_mapped(faces, tmp_path, capsys):
    ds = create_dataset("folder", str(faces), "all")
    serial = decode_dataset(ds, 24, False, workers=1)
    parallel = decode_dataset(ds, 24, False, cache_dir=str(tmp_path), workers=2)
    assert "2 worker processes" in capsys.readouterr().err
    assert torch.equal(serial.images, parallel.images) and serial.ids == parallel.ids
    assert torch.equal(serial.labels, parallel.labels) and serial.skipped == parallel.skipped
    assert len(serial) == len(ds) - 2 and [Path(w).name for w, _ in serial.skipped] == ["0001.png", "0100.png"]
    for name in ("happy/0003.png", "sad/0102.png"):  # the rows after each gap hold their own images
        want = pil_to_array(read_image(faces / name), 24, False)
        assert np.array_equal(parallel.images[parallel.ids.index(name)].numpy(), want)
    path = _only(tmp_path)
    assert path.stat().st_size > DATA_OFFSET + parallel.images.numel()  # header, rows, meta
    again = decode_dataset(ds, 24, False, cache_dir=str(tmp_path), workers=2)
    assert "decoding" not in capsys.readouterr().err  # read, not decoded
    assert torch.equal(again.images, serial.images) and again.skipped == serial.skipped
    if sys.platform.startswith("linux"):
        assert str(path) in Path("/proc/self/maps").read_text()  # mapped, not read into memory
    again.images[0] = 0  # copy-on-write: a write stays in this process, the file keeps its pixels
    assert torch.equal(decode_dataset(ds, 24, False, cache_dir=str(tmp_path)).images, serial.images)


def test_a_small_quick_decode_prints_nothing(tmp_path, capsys):
    """Evaluating a few images (``fdrl eval`` on a small split) keeps stderr for what goes wrong."""
    decode_dataset(create_dataset("synthetic", None, "val", num_samples=21), 32, True, cache_dir=str(tmp_path))
    assert capsys.readouterr().err == ""


def test_batches_are_gathered_in_the_order_asked(tmp_path):
    ds = create_dataset("synthetic", None, "val", num_samples=21, image_size=32)
    for cache in (None, str(tmp_path)):  # from memory; read from the cache file, a run of rows at a time
        data = decode_dataset(ds, 32, True, cache_dir=cache)
        assert (data.reader is None) == (cache is None)
        for idx in ([9, 2, 17, 2, 0], [20, 3, 4, 5, 19, 0, 1]):
            idx = torch.tensor(idx)
            assert torch.equal(data.rows(idx), data.images[idx])


@pytest.mark.parametrize("damage", ["truncated", "header", "meta", "rows of another size"])
def test_a_damaged_cache_file_is_rebuilt_never_read(tmp_path, damage):
    ds = create_dataset("synthetic", None, "val", num_samples=21, image_size=32)
    first = decode_dataset(ds, 32, True, cache_dir=str(tmp_path))
    path = _only(tmp_path)
    original = path.read_bytes()
    blob = bytearray(original)
    if damage == "truncated":
        blob = blob[: DATA_OFFSET + 1000]
    elif damage == "header":
        blob[20] ^= 1
    elif damage == "meta":
        blob[-3] ^= 1
    else:
        decode_dataset(ds, 40, True, cache_dir=str(tmp_path / "other"))
        blob = bytearray(_only(tmp_path / "other").read_bytes())
    (tmp_path / "damaged").write_bytes(bytes(blob))
    (tmp_path / "damaged").replace(path)  # a new file: rewriting a mapped file in place pulls it from under its maps
    logged: list[str] = []
    again = decode_dataset(ds, 32, True, cache_dir=str(tmp_path), log=logged.append)
    assert torch.equal(again.images, first.images) and again.ids == first.ids
    assert len(logged) == 1 and str(path) in logged[0] and "decoding again" in logged[0]
    assert _only(tmp_path).read_bytes() == original


def test_strict_parallel_decode_names_the_file_and_leaves_no_partial_cache(faces, tmp_path):
    ds = create_dataset("folder", str(faces), "all", on_error="strict")
    with pytest.raises(DataError, match="0001.png"):
        decode_dataset(ds, 24, False, cache_dir=str(tmp_path), workers=2)
    assert not list(tmp_path.iterdir())


def test_a_disk_too_small_for_the_cache_is_one_clear_error(tmp_path, monkeypatch):
    import shutil

    ds = create_dataset("synthetic", None, "val", num_samples=21, image_size=32)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1000))
    with pytest.raises(DataError, match=r"needs .* GiB in .* data\.cache_dir"):
        decode_dataset(ds, 32, True, cache_dir=str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_soft_targets_survive_the_cache(tmp_path):
    from fdrl.data.base import FERDataset, Sample

    rng = np.random.default_rng(0)
    votes = rng.dirichlet(np.ones(3), 6).astype(np.float32)
    samples = [Sample(id=str(i), soft=tuple(float(v) for v in votes[i]), pixels=rng.integers(0, 255, (8, 8, 3),
                                                                                            dtype=np.uint8))
               for i in range(6)]
    ds = FERDataset("votes", "train", ["a", "b", "c"], samples)
    built = decode_dataset(ds, 32, False, soft=True, cache_dir=str(tmp_path))
    read = decode_dataset(ds, 32, False, soft=True, cache_dir=str(tmp_path))
    assert read.targets.dtype == torch.float32 and torch.equal(read.targets, torch.from_numpy(votes))
    assert torch.equal(built.targets, read.targets) and read.labels.tolist() == votes.argmax(1).tolist()


def test_one_rank_per_cache_file_decodes():
    """Under torchrun: rank 0 decodes, and the first rank of each node that cannot reach rank 0's file."""
    from fdrl.data.ranks import decoders

    one_node = [("a", True, "f.rows")] * 4
    assert decoders(one_node) == {0}
    shared_folder = one_node[:2] + [("b", True, "f.rows")] * 2
    assert decoders(shared_folder) == {0}
    local_disks = one_node[:2] + [("b", False, "f.rows")] * 2 + [("c", False, "f.rows")] * 2
    assert decoders(local_disks) == {0, 2, 4}
    other_copy = one_node[:2] + [("b", True, "g.rows")] * 2  # the node's images have other file times: its own key
    assert decoders(other_copy) == {0, 2}


def test_decode_workers_must_be_positive():
    from fdrl.config import load_config

    with pytest.raises(ConfigError, match="decode_workers must be >= 1"):
        load_config(None, ["data.decode_workers=0"])
    with pytest.raises(DataError, match="workers must be >= 1"):
        decode_dataset(create_dataset("synthetic", None, "val", num_samples=7), 32, True, workers=0)
