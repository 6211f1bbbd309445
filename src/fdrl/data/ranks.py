"""Which processes of a ``torchrun`` job decode a split into the cache, and how the others wait for them.

Rank 0 decodes; so does the first rank of every node that cannot see rank 0's cache folder (a node-local disk).
Nodes that share the folder (one machine, or a network file system) leave the work to rank 0. Everyone else
waits, then maps the finished file, so no image is decoded twice on a node. The wait uses its own gloo group
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


def decodes_here(folder: Path, group: dist.ProcessGroup) -> bool:
    """Whether this rank decodes into ``folder``: rank 0, and the first rank of each node that does not see a file
    rank 0 puts there (the collective calls of every rank must match, so all ranks take part)."""
    rank = dist.get_rank()
    box: list[str | None] = [None]
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        box[0] = f".shared-{uuid.uuid4().hex}"
        (folder / box[0]).touch()
    dist.broadcast_object_list(box, src=0, group=group)
    seen: list[tuple[str, bool] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(seen, (node_name(), (folder / str(box[0])).exists()), group=group)
    if rank == 0:
        (folder / str(box[0])).unlink(missing_ok=True)
    nodes = [s for s in seen if s is not None]
    first = {}
    for r, (node, _) in enumerate(nodes):
        first.setdefault(node, r)
    blind = {node for node, _ in nodes} - {node for node, sees in nodes if sees}
    me = nodes[rank][0]
    return rank == 0 or (me in blind and first[me] == rank)


def decode_once(folder: Path, build: Callable[[], T], read: Callable[[], T]) -> T:
    """``build()`` (decode into ``folder``, or map the file already there) on the decoding ranks, ``read()`` on the
    others once every decoder is done; outside a process group, ``build()``. A decoder's failure fails every rank
    with its message instead of leaving them waiting."""
    if not in_process_group():
        return build()
    group = dist.new_group(backend="gloo", timeout=WAIT)
    try:
        mine = decodes_here(folder, group)
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
                raise DataError(f"rank {r} could not decode the data into {folder}: {s}")
        return result if mine else read()  # type: ignore[return-value]
    finally:
        dist.destroy_process_group(group)
