"""Which processes of a ``torchrun`` job decode a split into the cache, and how the others wait for them.

Rank 0 decodes; so does the first rank of every node that cannot see rank 0's cache folder (a node-local disk) or
whose file has another name there (its copy of the images has other file times, so another cache key). Nodes that
share rank 0's file (one machine, or a network file system) leave the work to rank 0. Everyone else waits, then
maps the finished file, so no image is decoded twice on a node. The wait uses its own gloo group
with a long timeout: a first decode of a large set outlasts the default 30-minute collective timeout.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch.distributed as dist

from ..errors import DataError, first_line

T = TypeVar("T")
WAIT = timedelta(hours=24)


def in_process_group() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def node_name() -> str:
    """This rank's node: torchrun's node rank (GROUP_RANK) where set, else the host name."""
    return os.environ.get("GROUP_RANK") or socket.gethostname()


def decodes_here(path: Path, group: dist.ProcessGroup) -> bool:
    """Whether this rank writes the cache file ``path``: rank 0, and the first rank of each node that does not
    share rank 0's file (the collective calls of every rank must match, so all ranks take part)."""
    rank, folder = dist.get_rank(), path.parent
    box: list[str | None] = [None]
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        box[0] = f".shared-{uuid.uuid4().hex}"
        (folder / box[0]).touch()
    dist.broadcast_object_list(box, src=0, group=group)
    seen: list[tuple[str, bool, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(seen, (node_name(), (folder / str(box[0])).exists(), path.name), group=group)
    if rank == 0:
        (folder / str(box[0])).unlink(missing_ok=True)
    return rank in decoders([s for s in seen if s is not None])


def decoders(ranks: list[tuple[str, bool, str]]) -> set[int]:
    """The ranks that decode, from each rank's (node, whether it sees rank 0's folder, its cache file name): rank
    0, and the first rank of every node that does not share rank 0's file."""
    first: dict[str, int] = {}
    for r, (node, _, _) in enumerate(ranks):
        first.setdefault(node, r)
    sharing = {node for node, sees, name in ranks if sees and name == ranks[0][2]}
    return {0} | {r for node, r in first.items() if node not in sharing}


def decode_once(path: Path, build: Callable[[], T], read: Callable[[], T]) -> T:
    """``build()`` (decode into the cache file ``path``, or map it when it is there) on the decoding ranks,
    ``read()`` on the others once every decoder is done; outside a process group, ``build()``. A decoder's
    failure fails every rank with its message instead of leaving them waiting."""
    if not in_process_group():
        return build()
    group = dist.new_group(backend="gloo", timeout=WAIT)
    try:
        mine = decodes_here(path, group)
        result: T | None = None
        failure: BaseException | None = None
        if mine:
            try:
                result = build()
            except BaseException as exc:  # noqa: BLE001 - told to the waiting ranks, then raised here
                failure = exc
        status: list[str | None] = [None] * dist.get_world_size()
        dist.all_gather_object(status, None if failure is None else first_line(failure), group=group)
        if failure is not None:
            raise failure
        for r, s in enumerate(status):
            if s is not None:
                raise DataError(f"rank {r} could not decode the data into {path.parent}: {s}")
        return result if mine else read()  # type: ignore[return-value]
    finally:
        dist.destroy_process_group(group)
